"""Full ranking: every test edge against every node, streaming over partitions, filtered.

For each edge (h, r, t) of the split, t is ranked among all N nodes as the
answer to (h, r, ?) and h among all N nodes as the answer to (?, r, t) (with
several entity types: among all nodes of the answer's type). With the
filtered protocol (Bordes et al. 2013) every other known true answer (from any
split of the DATA: train, valid, test, ...) is removed from the candidates
first. Ties are counted the realistic way: rank = 1 + #better + #tied / 2, the
mean of the optimistic and the pessimistic rank.

Memory: the split's edges with their two rows each, the filter's index (about
24 bytes per known edge), and one partition of embeddings at a time; the
scores of a block of queries against a partition are computed in slices.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from bigembed.checkpoint import RELATION_PARAMS_KEY, VersionManifest, read_embeddings, read_shard_of
from bigembed.config import Config
from bigembed.evaluation.metrics import RankAccumulator, combine_directions
from bigembed.evaluation.scoring import Direction, direction
from bigembed.storage.data_manifest import DataManifest
from bigembed.storage.edges import Bucket, read_edges
from bigembed.trainer import Model, RelationState

QUERY_BLOCK = 512  # queries scored together
SCORE_ELEMENTS = 1 << 24  # bound on one (queries x candidates) score slice


@dataclass(frozen=True)
class SplitEdges:
    """All edges of a split with global node ids (partition offset + local offset), sorted by relation."""

    lhs: np.ndarray
    rel: np.ndarray
    rhs: np.ndarray


def partition_offsets(data: DataManifest) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(data.entity_counts)]).astype(np.int64)


def read_split(data: DataManifest, split: str) -> SplitEdges:
    offsets = partition_offsets(data)
    lhs, rel, rhs = [], [], []
    P = data.num_partitions
    for l in range(P):
        for r in range(P):
            bucket = Bucket(l, r)
            count = data.edge_count(split, bucket)
            if not count:
                continue
            edges = read_edges(data.path.parent, split, bucket, count, dtypes=data.edge_dtypes)
            # global ids need int64: widen before adding the partition's offset
            lhs.append(np.asarray(edges.lhs, dtype=np.int64) + offsets[l])
            rhs.append(np.asarray(edges.rhs, dtype=np.int64) + offsets[r])
            rel.append(np.asarray(edges.rel, dtype=np.int64))
    if not lhs:
        empty = np.empty(0, np.int64)
        return SplitEdges(empty, empty, empty)
    L, R, T = np.concatenate(lhs), np.concatenate(rel), np.concatenate(rhs)
    order = np.argsort(R, kind="stable")
    return SplitEdges(L[order], R[order], T[order])


def _reversed(edges: SplitEdges) -> SplitEdges:
    return SplitEdges(edges.rhs, edges.rel, edges.lhs)


class FilterIndex:
    """Known true answers of (node, relation) queries in one direction, as sorted arrays."""

    def __init__(self, anchors: np.ndarray, rels: np.ndarray, answers: np.ndarray, num_relations: int) -> None:
        self.num_relations = num_relations
        keys = anchors * num_relations + rels
        order = np.lexsort((answers, keys))
        self.keys, self.answers = keys[order], answers[order]

    def pairs(self, anchors: np.ndarray, rels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(query index, known answer) for every known answer of each query (its own included)."""
        keys = anchors * self.num_relations + rels
        lo = np.searchsorted(self.keys, keys, "left")
        hi = np.searchsorted(self.keys, keys, "right")
        counts = hi - lo
        query = np.repeat(np.arange(len(keys)), counts)
        starts = np.repeat(lo - np.concatenate([[0], np.cumsum(counts)[:-1]]), counts)
        return query, self.answers[starts + np.arange(counts.sum())]


def load_checkpoint_model(run_dir: Path, manifest: VersionManifest, data: DataManifest,
                          config: Config) -> tuple[Model, RelationState]:
    model = Model.for_data(config, data)
    params = torch.zeros(0)
    if RELATION_PARAMS_KEY in manifest.shards:
        params = torch.from_numpy(read_shard_of(run_dir, manifest, RELATION_PARAMS_KEY))
    return model, RelationState(model.specs, params, torch.zeros(0))


PartitionLoader = Callable[[int], Tensor]


def _partitions(load: PartitionLoader, data: DataManifest, cache: dict[int, Tensor]) -> Iterator[tuple[int, Tensor]]:
    """Each partition's embeddings in turn; with one partition it is read once and kept."""
    for p in range(data.num_partitions):
        if p in cache:
            yield p, cache[p]
            continue
        emb = load(p)
        if data.num_partitions == 1:
            cache[p] = emb
        yield p, emb


def _gather_rows(load: PartitionLoader, data: DataManifest, nodes: np.ndarray,
                 cache: dict[int, Tensor], dim: int) -> Tensor:
    """(len(nodes), dim) embeddings of global node ids, one partition at a time."""
    offsets = partition_offsets(data)
    out = torch.empty(len(nodes), dim)
    part = np.searchsorted(offsets, nodes, "right") - 1
    for p, emb in _partitions(load, data, cache):
        sel = np.nonzero(part == p)[0]
        if len(sel):
            out[torch.from_numpy(sel)] = emb[torch.from_numpy(nodes[sel] - offsets[p])]
    return out


def evaluate_full(run_dir: Path, manifest: VersionManifest, data: DataManifest, config: Config, split: str,
                  filtered: bool = True, per_relation: bool = False,
                  progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Full-ranking metrics of ``split`` (filtered unless ``filtered=False``)."""
    data.require_split(split)
    model, relations = load_checkpoint_model(run_dir, manifest, data, config)

    def load(p: int) -> Tensor:
        return torch.from_numpy(read_embeddings(run_dir, manifest, data, p))

    out = rank_split(data, split, load, model, relations, config.model.reciprocal, config.model.dim,
                     filtered, per_relation, progress)
    return {**out, "version": manifest.version, "epochs_done": manifest.position.epoch}


def rank_split(data: DataManifest, split: str, load: PartitionLoader, model: Model, relations: RelationState,
               reciprocal: bool, dim: int, filtered: bool = True, per_relation: bool = False,
               progress: Callable[[int], None] | None = None, reverse: bool = False) -> dict[str, Any]:
    """Full ranking of ``split`` with embeddings from ``load(partition)`` scored by ``model``.

    The building block of :func:`evaluate_full`; also lets a benchmark rank
    embeddings trained elsewhere with exactly the same protocol. ``reverse``
    ranks every edge (h, r, t) as (t, r, h): a model whose operator acts on the
    rhs, as PyTorch-BigGraph's does, is this model on reversed edges (its "rhs"
    results are then the original lhs predictions and vice versa).
    """
    edges = _reversed(read_split(data, split)) if reverse else read_split(data, split)
    R = len(data.relations)
    n = len(edges.lhs)
    filt_rhs = filt_lhs = None
    if filtered:
        known = [_reversed(read_split(data, s)) if reverse else read_split(data, s) for s in data.splits()]
        kl = np.concatenate([k.lhs for k in known])
        kr = np.concatenate([k.rel for k in known])
        kt = np.concatenate([k.rhs for k in known])
        filt_rhs, filt_lhs = FilterIndex(kl, kr, kt, R), FilterIndex(kt, kr, kl, R)
    cache: dict[int, Tensor] = {}
    H = _gather_rows(load, data, edges.lhs, cache, dim)
    T = _gather_rows(load, data, edges.rhs, cache, dim)
    offsets = partition_offsets(data)
    bounds = np.flatnonzero(np.diff(edges.rel)) + 1
    starts = np.concatenate([[0], bounds]).astype(np.int64)
    ends = np.concatenate([bounds, [n]]).astype(np.int64)
    blocks: list[_Block] = []
    with torch.no_grad():
        for s, e in zip(starts.tolist(), ends.tolist(), strict=True):
            relation = int(edges.rel[s]) if e > s else 0
            for side in ("rhs", "lhs"):
                predict_lhs = side == "lhs"
                answers = edges.lhs[s:e] if predict_lhs else edges.rhs[s:e]
                anchors = edges.rhs[s:e] if predict_lhs else edges.lhs[s:e]
                index = filt_lhs if predict_lhs else filt_rhs
                for b in range(s, e, QUERY_BLOCK):
                    be = min(e, b + QUERY_BLOCK)
                    lo, hi = b - s, be - s
                    d = direction(model, relations, relation, H[b:be], T[b:be], predict_lhs, reciprocal)
                    if index is not None:
                        q, excluded = index.pairs(anchors[lo:hi], np.full(hi - lo, relation))
                    else:
                        q, excluded = np.empty(0, np.int64), np.empty(0, np.int64)
                    # the true answer itself is never a competitor
                    q = np.concatenate([q, np.arange(hi - lo)])
                    excluded = np.concatenate([excluded, answers[lo:hi]])
                    part = np.searchsorted(offsets, excluded, "right") - 1
                    spec = model.specs[relation]
                    target = spec.lhs_type if predict_lhs else spec.rhs_type
                    blocks.append(_Block(side, relation, target, d, q, excluded, part))
        for p, emb in _partitions(load, data, cache):
            ranges = data.type_ranges(p)
            for block in blocks:
                block.count(model, emb, p, offsets, ranges[block.target])
                if progress:
                    progress(block.d.queries.shape[0])
    results: dict[str, dict[int, RankAccumulator]] = {"rhs": defaultdict(RankAccumulator),
                                                       "lhs": defaultdict(RankAccumulator)}
    for block in blocks:
        ranks = 1.0 + block.greater + 0.5 * block.ties
        others = data.entity_types[block.target].total - 1  # candidates besides the true answer
        auc = (others - block.greater - 0.5 * block.ties) / max(1, others)
        results[block.side][block.relation].add(ranks, auc, block.nonfinite)
    return _report(results, data, split, filtered, per_relation)


class _Block:
    """A block of queries of one relation and direction, with its running counts.

    A true answer whose score is not finite loses to every candidate that is not filtered out,
    and a candidate scoring NaN beats the true answer; ``nonfinite`` counts such scores."""

    def __init__(self, side: str, relation: int, target: int, d: Direction, q: np.ndarray,
                 excluded: np.ndarray, part: np.ndarray) -> None:
        self.side, self.relation, self.target, self.d = side, relation, target, d
        nq = d.queries.shape[0]
        # a known answer listed twice (an edge in two splits) is excluded once
        width = int(excluded.max()) + 1 if len(excluded) else 1
        _, first = np.unique(q * width + excluded, return_index=True)
        self.q, self.excluded, self.part = q[first], excluded[first], part[first]
        self.greater = torch.zeros(nq, dtype=torch.float64)
        self.ties = torch.zeros(nq, dtype=torch.float64)
        true = d.true_scores
        self.lost = ~torch.isfinite(true)
        self.nonfinite = int(self.lost.sum())
        # below every candidate's score (all made +inf) and above the filtered ones' (-inf)
        self.true = torch.where(self.lost, torch.finfo(true.dtype).min, true).unsqueeze(1)

    def count(self, model: Model, emb: Tensor, p: int, offsets: np.ndarray, rows: tuple[int, int]) -> None:
        """Add the candidates of partition ``p`` (``emb``) scoring above / equal to each true
        answer; the candidates are ``rows``, the answer's entity type's rows of ``p``."""
        sel = self.part == p
        ex_q = torch.from_numpy(self.q[sel])
        ex_c = torch.from_numpy(self.excluded[sel] - offsets[p])
        lost = bool(self.lost.any())
        step = max(1, SCORE_ELEMENTS // max(1, self.d.queries.shape[0]))
        for c0 in range(rows[0], rows[1], step):
            c1 = min(rows[1], c0 + step)
            scores = self.d.scores(model, emb[c0:c1])
            inside = (ex_c >= c0) & (ex_c < c1)
            ex_rows, ex_cols = ex_q[inside], ex_c[inside] - c0
            if not bool(torch.isfinite(scores.sum())):  # one reduction, no mask, on the usual path
                bad = ~torch.isfinite(scores)  # (a sum that overflows finds no bad score here: exact)
                self.nonfinite += int(bad.sum()) - int(bad[ex_rows, ex_cols].sum())
                scores.masked_fill_(scores.isnan(), float("inf"))
            if lost:
                scores[self.lost] = float("inf")
            scores[ex_rows, ex_cols] = float("-inf")
            self.greater += (scores > self.true).sum(1)
            self.ties += (scores == self.true).sum(1)


def _report(results: dict[str, dict[int, RankAccumulator]], data: DataManifest, split: str,
            filtered: bool, per_relation: bool) -> dict[str, Any]:
    def merged(side: str) -> dict[str, float | int]:
        total = RankAccumulator()
        for acc in results[side].values():
            total.merge(acc)
        return total.summary()

    rhs, lhs = merged("rhs"), merged("lhs")
    out: dict[str, Any] = {
        "split": split,
        "protocol": ("filtered" if filtered else "raw") + (
            " full ranking against every node of the answer's entity type" if data.typed
            else f" full ranking against all {data.num_entities} nodes"),
        **combine_directions(rhs, lhs),
        "rhs": rhs,
        "lhs": lhs,
    }
    if per_relation:
        out["relations"] = {}
        for r, name in enumerate(data.relations):
            if r in results["rhs"]:
                a, b = results["rhs"][r].summary(), results["lhs"][r].summary()
                out["relations"][name] = {**combine_directions(a, b), "rhs": a, "lhs": b}
    return out
