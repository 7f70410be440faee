"""Sampled ranking, as PyTorch-BigGraph evaluates: each test edge against K sampled negatives.

For every edge (lhs, rel, rhs) of the split, the true rhs is ranked among K rows
drawn uniformly from the rhs's partition, and the true lhs among K rows of the
lhs's partition. Partitions are read one bucket at a time from the committed
checkpoint, so the table never needs to fit in memory.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bigembed.checkpoint import RELATION_PARAMS_KEY, VersionManifest, emb_key, read_shard_of
from bigembed.config import ModelConfig
from bigembed.evaluation.metrics import RankAccumulator, ranks_against
from bigembed.storage.data_manifest import DataManifest
from bigembed.storage.edges import Bucket, read_edges
from bigembed.trainer import Model
from bigembed.trainer.bucket import plan_batches

EVAL_BATCH = 1000


RanksAndAuc = tuple[torch.Tensor, torch.Tensor]


def _score_batch(model: Model, L: torch.Tensor, R: torch.Tensor, UL: torch.Tensor, UR: torch.Tensor,
                 params: torch.Tensor | None) -> tuple[RanksAndAuc, RanksAndAuc]:
    """Ranks/AUC for rhs- and lhs-corruption of one single-relation batch."""
    lhs_op = model.operator.apply(L, params)
    pos = model.comparator.positive(lhs_op, R)
    neg_rhs = model.comparator.negative(lhs_op, UR)
    neg_lhs = model.comparator.negative(R, model.operator.apply(UL, params))
    return ranks_against(pos, neg_rhs), ranks_against(pos, neg_lhs)


def evaluate_sampled(run_dir: Path, manifest: VersionManifest, data: DataManifest, model_config: ModelConfig,
                     split: str, negatives: int, seed: int = 0,
                     progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Sampled-ranking metrics of ``split`` for the checkpoint ``manifest``."""
    data.require_split(split)
    model = Model.from_config(model_config)
    params = None
    if RELATION_PARAMS_KEY in manifest.shards:
        params = torch.from_numpy(read_shard_of(run_dir, manifest, RELATION_PARAMS_KEY))
    generator = torch.Generator().manual_seed(seed)
    rhs_acc, lhs_acc = RankAccumulator(), RankAccumulator()
    cache: dict[int, torch.Tensor] = {}
    P = data.num_partitions
    for l in range(P):
        for r in range(P):
            bucket = Bucket(l, r)
            count = data.edge_count(split, bucket)
            if not count:
                continue
            for p in list(cache):
                if p not in (l, r):
                    del cache[p]
            for p in (l, r):
                if p not in cache:
                    cache[p] = torch.from_numpy(read_shard_of(run_dir, manifest, emb_key(data.entity, p)))
            lhs_emb, rhs_emb = cache[l], cache[r]
            edges = read_edges(data.path.parent, split, bucket, count)
            lhs_idx = torch.from_numpy(np.array(edges.lhs))
            rhs_idx = torch.from_numpy(np.array(edges.rhs))
            rel = torch.from_numpy(np.array(edges.rel))
            for relation, pos in plan_batches(rel, EVAL_BATCH, params is not None, generator):
                ul = torch.randint(lhs_emb.shape[0], (negatives,), generator=generator)
                ur = torch.randint(rhs_emb.shape[0], (negatives,), generator=generator)
                (rr, ra), (lr, la) = _score_batch(
                    model, lhs_emb[lhs_idx[pos]], rhs_emb[rhs_idx[pos]], lhs_emb[ul], rhs_emb[ur],
                    None if params is None else params[relation],
                )
                rhs_acc.add(rr, ra)
                lhs_acc.add(lr, la)
                if progress:
                    progress(int(pos.numel()))
    rhs, lhs = rhs_acc.summary(), lhs_acc.summary()
    both = {k: (rhs[k] + lhs[k]) / 2 for k in rhs if k != "count"}
    return {
        "split": split,
        "protocol": f"sampled ({negatives} uniform negatives per edge and side, from the true entity's partition)",
        "negatives": negatives,
        "version": manifest.version,
        "epochs_done": manifest.position.epoch,
        "count": rhs["count"],
        **both,
        "rhs": rhs,
        "lhs": lhs,
    }
