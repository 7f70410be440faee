"""Training one bucket: shuffle its edges slab by slab, batch them, run Hogwild workers."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from bigembed.config import TrainingConfig
from bigembed.scheduler.memory import SLAB_EDGES, resolve_workers
from bigembed.storage.edges import EdgeArrays
from bigembed.trainer import native
from bigembed.trainer.device import resolve_device
from bigembed.trainer.fused import reset_kernel_choice
from bigembed.trainer.model import Model, mixes_with_params
from bigembed.trainer.relations import RelationState, one_type_pair
from bigembed.trainer.state import PartitionState
from bigembed.trainer.step import train_batch


@dataclass(frozen=True)
class BucketStats:
    edges: int  # trained in this call (fewer than the bucket's when it started or stopped at a slab)
    loss: float  # summed over those edges
    seconds: float
    stopped_at: int | None = None  # slabs done when ``after_slab`` asked to stop; None: ran to the end


# after_slab(slabs_done, slabs, slab_loss, slab_edges) -> True to stop here (every worker has
# finished the slab)
AfterSlab = Callable[[int, int, float, int], bool]


def bucket_seed(seed: int, epoch: int, index: int) -> int:
    """A seed for bucket ``index`` of ``epoch`` that does not depend on anything else."""
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(1, np.uint64)[0] >> 1)


def slab_seed(seed: int, slab: int) -> int:
    """A seed for the slab at position ``slab`` of a bucket's slab order: each slab's randomness
    depends only on the bucket's seed and its position, so training can resume at any slab."""
    return int(np.random.SeedSequence([seed, 7_919, slab]).generate_state(1, np.uint64)[0] >> 1)


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


def _read_in_order(column: np.ndarray, start: int, stop: int, order: Tensor, dtype: type | None = None) -> Tensor:
    """``column[start:stop]`` read into memory (as ``dtype``: the one copy widens it) and
    permuted by ``order``."""
    return torch.from_numpy(np.array(column[start:stop], dtype=dtype)).index_select(0, order)


def mixes_relations(model: Model) -> bool:
    """Whether batches may mix relations: no relation has parameters, settings or entity
    types of its own."""
    first = model.specs[0] if model.specs else None
    return first is None or (one_type_pair(model.specs) and all(
        s.shape is None and (s.sides, s.all_negatives, s.weight) == (first.sides, first.all_negatives, first.weight)
        for s in model.specs
    ))


@dataclass(frozen=True)
class Slab:
    """A shuffled slice of a bucket's edges held in memory."""

    lhs: Tensor
    rhs: Tensor
    rel: Tensor
    weight: Tensor | None
    pools: dict[tuple[str, int], Tensor] = field(default_factory=dict)

    def pool(self, side: str, entity_type: int, types: Tensor | None) -> Tensor:
        """Rows at ``side`` of the slab's edges whose ``side`` is of ``entity_type``: drawing
        from them picks nodes of that type in proportion to their degree. ``types[r]``: the
        ``side`` entity type of relation ``r`` (None: every relation has the same types)."""
        column = self.lhs if side == "lhs" else self.rhs
        if types is None:
            return column
        key = (side, entity_type)
        if key not in self.pools:  # racing workers compute the same value
            self.pools[key] = column[types[self.rel.long()] == entity_type]
        return self.pools[key]


class BucketTrainer:
    """Runs buckets through a persistent pool of Hogwild worker threads.

    With ``model.reciprocal`` each batch of relation ``r`` is trained twice: as
    given, then reversed (rhs as lhs) under the inverse relation ``r + R``.
    """

    def __init__(self, model: Model, config: TrainingConfig, reciprocal: bool = False,
                 kernels: native.Kernels | None = None) -> None:
        self.model = model
        self.config = config
        self.reciprocal = reciprocal
        self.num_relations = len(model.specs) // 2 if reciprocal else len(model.specs)
        self.mixed_params = not mixes_relations(model) and mixes_with_params(model)
        forward = [s for s in model.specs if not s.inverse]
        self.device = resolve_device(config.device)
        # each relation's entity type per side, for degree pools (None: one pair of types)
        self.side_types = None if one_type_pair(model.specs) else {
            side: torch.tensor([getattr(s, f"{side}_type") for s in forward], device=self.device)
            for side in ("lhs", "rhs")}
        # All-negatives batches update every row of a partition: Hogwild threads would
        # only collide, so one worker uses all cores through intra-op parallelism. A GPU
        # runs each kernel in parallel already: one worker drives it.
        single = any(spec.all_negatives for spec in model.specs) or self.device.type != "cpu"
        self.workers = 1 if single else resolve_workers(config)
        # which kernels run, decided (and the C ones built) once, before the first bucket
        self.kernels = kernels or native.choose(config.kernels, config.ranking_gradients, self.device.type)
        self.lib = self.kernels.lib
        self.pool = ThreadPoolExecutor(self.workers) if self.workers > 1 else None
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // self.workers))

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()

    def _run_worker(self, batches: list[tuple[int, int, int]], slab: Slab, lhs: PartitionState,
                    rhs: PartitionState, relations: RelationState, seed: int,
                    extras: Sequence[PartitionState] | None = None) -> float:
        """Train ``batches``: ``(relation, start, stop)`` spans of the shuffled ``slab``."""
        generator = torch.Generator(device=self.device).manual_seed(seed)  # negatives are drawn where they are used
        reset_kernel_choice()
        degree = self.config.degree_fraction > 0
        total = 0.0
        for relation, begin, end in batches:
            li, ri = slab.lhs[begin:end], slab.rhs[begin:end]
            w = None if slab.weight is None else slab.weight[begin:end]
            rels = slab.rel[begin:end].long() if self.mixed_params else None
            spec = self.model.specs[relation]
            types = self.side_types
            pools = (slab.pool("lhs", spec.lhs_type, None if types is None else types["lhs"]),
                     slab.pool("rhs", spec.rhs_type, None if types is None else types["rhs"])) if degree else None
            total += train_batch(self.model, lhs, rhs, relations, relation, li, ri, w, self.config,
                                 generator, pools, rels, extras, self.lib)
            if self.reciprocal:
                back = None if rels is None else rels + self.num_relations
                reverse_pools = None if pools is None else (pools[1], pools[0])
                total += train_batch(self.model, rhs, lhs, relations, relation + self.num_relations, ri, li,
                                     w, self.config, generator, reverse_pools, back, extras, self.lib)
        return total

    def train_bucket(self, edges: EdgeArrays, lhs: PartitionState, rhs: PartitionState,
                     relations: RelationState, seed: int,
                     extras: Sequence[PartitionState] | None = None, start_slab: int = 0,
                     after_slab: AfterSlab | None = None) -> BucketStats:
        """Train every edge of a bucket once, a slab of at most ``SLAB_EDGES`` edges at a time.
        ``seed`` fixes all its randomness. ``extras``: None, or the other resident partitions,
        then sources of negatives with the bucket's own (``training.negative_partitions``).
        ``start_slab``: slabs of the bucket's (seeded) slab order already trained, skipped.
        ``after_slab`` is called after each slab, with every worker done (a consistent point
        to check the loss, commit, or stop)."""
        start = time.perf_counter()
        n = len(edges)
        by_relation = not mixes_relations(self.model) and not self.mixed_params
        total, trained = 0.0, 0
        slabs = torch.randperm(max(1, -(-n // SLAB_EDGES)), generator=torch.Generator().manual_seed(seed)).tolist()
        slabs = slabs if n else []
        for position in range(start_slab, len(slabs)):
            index = slabs[position]
            s, e = index * SLAB_EDGES, min(n, (index + 1) * SLAB_EDGES)
            loss = self._train_slab(edges, s, e, by_relation, lhs, rhs, relations,
                                    torch.Generator().manual_seed(slab_seed(seed, position)), extras)
            total += loss
            trained += e - s
            if after_slab is not None and after_slab(position + 1, len(slabs), loss, e - s):
                return BucketStats(trained, total, time.perf_counter() - start, position + 1)
        return BucketStats(trained, total, time.perf_counter() - start)

    def _train_slab(self, edges: EdgeArrays, s: int, e: int, by_relation: bool, lhs: PartitionState,
                    rhs: PartitionState, relations: RelationState, generator: torch.Generator,
                    extras: Sequence[PartitionState] | None) -> float:
        """Shuffle edges ``[s, e)`` of the bucket into batches and train them; the summed loss."""
        # whatever the columns' dtypes (storage.edges.EdgeArrays), the slab holds int64 offsets
        # (torch and the native kernels index with them) and int32 relations, converted here
        # in the copy that reads them, once a slab: batches are slices of it
        rel = torch.from_numpy(np.array(edges.rel[s:e], dtype=np.int32))
        planned = plan_batches(rel, self.config.batch_size, by_relation, generator)
        # the slab's columns in batch order, so a batch is a slice: gathering each batch's edges
        # from the slab at random positions cost 5% of training on the benchmark graph
        order = torch.cat([pos for _, pos in planned]) if planned else torch.empty(0, dtype=torch.long)
        batches, at = [], 0
        for relation, pos in planned:
            batches.append((relation, at, at + pos.shape[0]))
            at += pos.shape[0]
        dev = self.device  # the slab is what is streamed to a GPU
        slab = Slab(_read_in_order(edges.lhs, s, e, order, np.int64).to(dev),
                    _read_in_order(edges.rhs, s, e, order, np.int64).to(dev),
                    rel.index_select(0, order).to(dev),
                    None if edges.weight is None else _read_in_order(edges.weight, s, e, order).to(dev))
        del rel
        edges.drop_pages()  # the slab is a copy; keep resident memory flat in the bucket's size
        base = int(torch.randint(2**62, (1,), generator=generator))
        if self.pool is None:
            return self._run_worker(batches, slab, lhs, rhs, relations, base, extras)
        futures = [
            self.pool.submit(self._run_worker, batches[w :: self.workers], slab,
                             lhs, rhs, relations, base + w, extras)
            for w in range(self.workers)
        ]
        return sum(f.result() for f in futures)
