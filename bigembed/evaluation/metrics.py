"""Ranking metrics: MRR, Hits@k, AUC, with ties counted half (neither optimistic nor pessimistic)."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor

HITS_AT = (1, 3, 10)


def ranks_against(pos: Tensor, neg: Tensor) -> tuple[Tensor, Tensor]:
    """Rank of each positive among its negatives, and its AUC.

    ``pos``: (n,) scores; ``neg``: (n, k) scores. rank = 1 + #(neg > pos) + #(neg == pos) / 2;
    auc = (#(neg < pos) + #(neg == pos) / 2) / k. Both (n,) float64.
    """
    p = pos.unsqueeze(1)
    greater = (neg > p).sum(1).double()
    ties = (neg == p).sum(1).double()
    ranks = 1.0 + greater + 0.5 * ties
    k = max(1, neg.shape[1])
    auc = (neg.shape[1] - greater - 0.5 * ties) / k
    return ranks, auc


@dataclass
class RankAccumulator:
    """Streams ranks in and summarises them, so no list of all ranks is kept."""

    count: int = 0
    rr_sum: float = 0.0
    rank_sum: float = 0.0
    auc_sum: float = 0.0
    hits: dict[int, int] = field(default_factory=lambda: {k: 0 for k in HITS_AT})

    def add(self, ranks: Tensor, auc: Tensor) -> None:
        self.count += int(ranks.numel())
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
        return out
