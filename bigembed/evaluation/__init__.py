"""Link-prediction evaluation: ranking metrics and the sampled-ranking protocol."""

from bigembed.evaluation.metrics import RankAccumulator, ranks_against
from bigembed.evaluation.sampled import evaluate_sampled

__all__ = ["RankAccumulator", "evaluate_sampled", "ranks_against"]
