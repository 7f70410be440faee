"""Link-prediction evaluation: ranking metrics, the sampled and the full (filtered) protocols."""

from bigembed.evaluation.metrics import RankAccumulator, ranks_against
from bigembed.evaluation.ranking import evaluate_full
from bigembed.evaluation.sampled import evaluate_sampled

__all__ = ["RankAccumulator", "evaluate_full", "evaluate_sampled", "ranks_against"]
