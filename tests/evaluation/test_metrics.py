import torch

from bigembed.demo import random_mrr
from bigembed.evaluation import RankAccumulator, ranks_against


def test_ranks_count_ties_half_and_auc():
    pos = torch.tensor([1.0, 0.0, 5.0])
    neg = torch.tensor([[2.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0], [1.0, 2.0, 3.0, 4.0]])
    ranks, auc = ranks_against(pos, neg)
    assert ranks.tolist() == [2.5, 3.0, 1.0]
    assert auc.tolist() == [0.625, 0.5, 1.0]


def test_accumulator_summary():
    acc = RankAccumulator()
    acc.add(torch.tensor([1.0, 2.0]), torch.tensor([1.0, 0.5]))
    acc.add(torch.tensor([20.0]), torch.tensor([0.0]))
    s = acc.summary()
    assert s["count"] == 3
    assert abs(s["mrr"] - (1 + 0.5 + 0.05) / 3) < 1e-6
    assert s["hits@1"] == 1 / 3 and s["hits@10"] == 2 / 3
    assert abs(s["auc"] - 0.5) < 1e-6


def test_random_scores_reach_the_analytic_random_mrr():
    gen = torch.Generator().manual_seed(0)
    acc = RankAccumulator()
    for _ in range(20):
        acc.add(*ranks_against(torch.randn(1000, generator=gen), torch.randn(1000, 50, generator=gen)))
    assert abs(acc.summary()["mrr"] - random_mrr(50)) < 0.01
