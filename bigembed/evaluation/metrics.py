"""Ranking metrics: MRR, Hits@k, AUC, with ties counted half (neither optimistic nor pessimistic).

Never better for being broken: a true answer whose score is not a finite number (NaN, inf) ranks
last, and a candidate scoring NaN beats the true answer; every non-finite score is counted
(``nonfinite_scores``) so the report can say the model is broken.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

HITS_AT = (1, 3, 10)
COUNTS = ("count", "nonfinite_scores")  # summed over directions; the other metrics are averaged


def ranks_against(pos: Tensor, neg: Tensor) -> tuple[Tensor, Tensor]:
    """Rank of each positive among its negatives, and its AUC.

    ``pos``: (n,) scores; ``neg``: (n, k) scores. rank = 1 + #(neg > pos) + #(neg == pos) / 2;
    auc = (#(neg < pos) + #(neg == pos) / 2) / k. Both (n,) float64. A NaN negative counts as
    above its positive, and a positive that is not finite as below all its k negatives
    (rank k + 1, auc 0).
    """
    p = pos.unsqueeze(1)
    if bool(torch.isfinite(pos.sum() + neg.sum())):  # the usual path: two compares, no masks
        greater = (neg > p).sum(1).double()
        ties = (neg == p).sum(1).double()
    else:  # (a sum that overflows takes this path too, with the same answers)
        lost = ~torch.isfinite(p)
        greater = ((neg > p) | neg.isnan() | lost).sum(1).double()
        ties = ((neg == p) & ~lost).sum(1).double()
    ranks = 1.0 + greater + 0.5 * ties
    k = max(1, neg.shape[1])
    auc = (neg.shape[1] - greater - 0.5 * ties) / k
    return ranks, auc


def count_nonfinite(*scores: Tensor) -> int:
    """How many of the scores are NaN or infinite (one sum each when there are none)."""
    return sum(int((~torch.isfinite(s)).sum()) for s in scores if not bool(torch.isfinite(s.sum())))


def combine_directions(rhs: dict[str, Any], lhs: dict[str, Any]) -> dict[str, Any]:
    """The metrics of both directions: counts summed (``count`` is the edges', the same in
    both), the others averaged."""
    out = {k: (rhs[k] + lhs[k]) / 2 for k in rhs if k not in COUNTS}
    return {"count": rhs["count"], **out, "nonfinite_scores": rhs["nonfinite_scores"] + lhs["nonfinite_scores"]}


@dataclass
class RankAccumulator:
    """Streams ranks in and summarises them, so no list of all ranks is kept."""

    count: int = 0
    rr_sum: float = 0.0
    rank_sum: float = 0.0
    auc_sum: float = 0.0
    hits: dict[int, int] = field(default_factory=lambda: {k: 0 for k in HITS_AT})
    nonfinite: int = 0  # scores (true answers' and candidates') that were NaN or infinite

    def add(self, ranks: Tensor, auc: Tensor, nonfinite: int = 0) -> None:
        self.count += int(ranks.numel())
        self.nonfinite += nonfinite
        self.rr_sum += float((1.0 / ranks).sum())
        self.rank_sum += float(ranks.sum())
        self.auc_sum += float(auc.sum())
        for k in self.hits:
            self.hits[k] += int((ranks <= k).sum())

    def merge(self, other: RankAccumulator) -> None:
        self.count += other.count
        self.rr_sum += other.rr_sum
        self.rank_sum += other.rank_sum
        self.auc_sum += other.auc_sum
        self.nonfinite += other.nonfinite
        for k in self.hits:
            self.hits[k] += other.hits[k]

    def summary(self) -> dict[str, float | int]:
        n = max(1, self.count)
        out: dict[str, float | int] = {
            "count": self.count,
            "mrr": self.rr_sum / n,
            "mean_rank": self.rank_sum / n,
            "auc": self.auc_sum / n,
        }
        for k, v in self.hits.items():
            out[f"hits@{k}"] = v / n
        out["nonfinite_scores"] = self.nonfinite
        return out
