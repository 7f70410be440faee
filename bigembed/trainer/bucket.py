"""Training one bucket: shuffle its edges slab by slab, batch them, run Hogwild workers."""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from bigembed.config import TrainingConfig
from bigembed.storage.edges import EdgeArrays
from bigembed.trainer.batch import Model, train_batch
from bigembed.trainer.state import PartitionState, RelationState

SLAB_EDGES = 4_000_000  # edges shuffled together; bounds the bucket's resident copy


@dataclass(frozen=True)
class BucketStats:
    edges: int
    loss: float  # summed over edges
    seconds: float


def resolve_workers(config: TrainingConfig) -> int:
    if config.deterministic:
        return 1
    if config.workers > 0:
        return config.workers
    return max(1, min(8, os.cpu_count() or 1))


def bucket_seed(seed: int, epoch: int, index: int) -> int:
    """A seed for bucket ``index`` of ``epoch`` that does not depend on anything else."""
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(1, np.uint64)[0] >> 1)


def plan_batches(
    rel: Tensor, batch_size: int, by_relation: bool, generator: torch.Generator
) -> list[tuple[int, Tensor]]:
    """Cut a slab into shuffled batches of one relation each.

    ``rel``: (n,) relation indices. Returns ``(relation, positions)`` pairs where
    ``positions`` index the slab; all positions appear exactly once.
    """
    n = rel.shape[0]
    perm = torch.randperm(n, generator=generator)
    batches: list[tuple[int, Tensor]] = []
    if not by_relation:
        return [(0, perm[s : s + batch_size]) for s in range(0, n, batch_size)]
    shuffled_rel = rel[perm].long()
    order = torch.argsort(shuffled_rel, stable=True)
    perm = perm[order]
    counts = torch.bincount(shuffled_rel).tolist()
    start = 0
    for r, count in enumerate(counts):
        for s in range(start, start + count, batch_size):
            batches.append((r, perm[s : min(s + batch_size, start + count)]))
        start += count
    shuffle = torch.randperm(len(batches), generator=generator).tolist()
    return [batches[i] for i in shuffle]


class BucketTrainer:
    """Runs buckets through a persistent pool of Hogwild worker threads."""

    def __init__(self, model: Model, config: TrainingConfig) -> None:
        self.model = model
        self.config = config
        self.workers = resolve_workers(config)
        self.pool = ThreadPoolExecutor(self.workers) if self.workers > 1 else None
        if self.workers > 1:
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // self.workers))

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()

    def _run_worker(self, batches: list[tuple[int, Tensor]], lhs_idx: Tensor, rhs_idx: Tensor,
                    lhs: PartitionState, rhs: PartitionState, relations: RelationState, seed: int) -> float:
        generator = torch.Generator().manual_seed(seed)
        total = 0.0
        for relation, pos in batches:
            total += train_batch(self.model, lhs, rhs, relations, relation, lhs_idx[pos], rhs_idx[pos],
                                 self.config, generator)
        return total

    def train_bucket(self, edges: EdgeArrays, lhs: PartitionState, rhs: PartitionState,
                     relations: RelationState, seed: int) -> BucketStats:
        """Train every edge of a bucket once. ``seed`` fixes all its randomness."""
        start = time.perf_counter()
        generator = torch.Generator().manual_seed(seed)
        n = len(edges)
        by_relation = relations.params is not None
        total = 0.0
        slabs = torch.randperm(max(1, -(-n // SLAB_EDGES)), generator=generator).tolist() if n else []
        for slab in slabs:
            s, e = slab * SLAB_EDGES, min(n, (slab + 1) * SLAB_EDGES)
            lhs_idx = torch.from_numpy(np.array(edges.lhs[s:e]))
            rhs_idx = torch.from_numpy(np.array(edges.rhs[s:e]))
            rel = torch.from_numpy(np.array(edges.rel[s:e]))
            batches = plan_batches(rel, self.config.batch_size, by_relation, generator)
            base = int(torch.randint(2**62, (1,), generator=generator))
            if self.pool is None:
                total += self._run_worker(batches, lhs_idx, rhs_idx, lhs, rhs, relations, base)
            else:
                futures = [
                    self.pool.submit(self._run_worker, batches[w :: self.workers], lhs_idx, rhs_idx,
                                     lhs, rhs, relations, base + w)
                    for w in range(self.workers)
                ]
                total += sum(f.result() for f in futures)
        return BucketStats(n, total, time.perf_counter() - start)
