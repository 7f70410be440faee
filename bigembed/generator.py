"""Synthetic graphs with planted structure, for demos, tests and benchmarks.

Nodes are split into ``communities`` groups. Each relation maps every community
to a target community (a seeded random permutation per relation). An edge picks
its lhs by a power-law (Zipf-like) popularity, a relation uniformly, and its rhs
by popularity among the target community of the lhs's community under that
relation; a ``noise`` fraction of rhs are uniform instead. Link prediction is
therefore learnable (the community and relation decide the rhs's group) and
degrees are heavy-tailed. Edges stream out in chunks, so any size fits in memory
bounded by the node count.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from bigembed.errors import BigembedError


@dataclass(frozen=True)
class GraphSpec:
    nodes: int = 1000
    edges: int = 10000
    relations: int = 3
    communities: int = 10
    exponent: float = 1.0  # popularity ~ 1 / rank**exponent
    noise: float = 0.05
    seed: int = 0
    int_ids: bool = False

    def validate(self) -> None:
        checks = [
            (self.nodes >= 2, f"--nodes must be >= 2, got {self.nodes}"),
            (self.edges >= 1, f"--edges must be >= 1, got {self.edges}"),
            (self.relations >= 1, f"--relations must be >= 1, got {self.relations}"),
            (1 <= self.communities <= self.nodes,
             f"--communities must be between 1 and --nodes ({self.nodes}), got {self.communities}"),
            (0.0 <= self.noise <= 1.0, f"--noise must be between 0 and 1, got {self.noise}"),
            (self.exponent >= 0.0, f"--exponent must be >= 0, got {self.exponent}"),
        ]
        for ok, message in checks:
            if not ok:
                raise BigembedError(message)


class _Sampler:
    """Precomputed tables: community of each node and cumulative popularity by community."""

    def __init__(self, spec: GraphSpec, rng: np.random.Generator) -> None:
        n = spec.nodes
        popularity = 1.0 / np.arange(1, n + 1, dtype=np.float64) ** spec.exponent
        popularity = popularity[rng.permutation(n)]  # popular nodes spread over communities
        self.community = rng.integers(0, spec.communities, n)
        self.community[: spec.communities] = np.arange(spec.communities)  # none empty
        self.community = self.community[rng.permutation(n)]
        self.by_community = np.argsort(self.community, kind="stable")
        self.bounds = np.searchsorted(self.community[self.by_community], np.arange(spec.communities + 1))
        self.cum = np.concatenate([[0.0], np.cumsum(popularity[self.by_community])])
        self.cum_all = np.concatenate([[0.0], np.cumsum(popularity)])
        self.targets = np.stack([rng.permutation(spec.communities) for _ in range(spec.relations)])

    def popular(self, rng: np.random.Generator, size: int) -> np.ndarray:
        u = rng.random(size) * self.cum_all[-1]
        return np.minimum(np.searchsorted(self.cum_all, u, side="right") - 1, len(self.cum_all) - 2)

    def in_community(self, rng: np.random.Generator, comm: np.ndarray) -> np.ndarray:
        lo, hi = self.cum[self.bounds[comm]], self.cum[self.bounds[comm + 1]]
        u = lo + rng.random(comm.shape[0]) * (hi - lo)
        pos = np.searchsorted(self.cum, u, side="right") - 1
        pos = np.clip(pos, self.bounds[comm], self.bounds[comm + 1] - 1)
        return self.by_community[pos]


def generate_edges(spec: GraphSpec, chunk: int = 200_000) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Yield ``(lhs, rel, rhs)`` int64 arrays of at most ``chunk`` edges, ``spec.edges`` in all."""
    spec.validate()
    rng = np.random.default_rng(spec.seed)
    sampler = _Sampler(spec, rng)
    left = spec.edges
    while left > 0:
        m = min(chunk, left)
        lhs = sampler.popular(rng, m)
        rel = rng.integers(0, spec.relations, m)
        rhs = sampler.in_community(rng, sampler.targets[rel, sampler.community[lhs]])
        noisy = rng.random(m) < spec.noise
        rhs[noisy] = rng.integers(0, spec.nodes, int(noisy.sum()))
        left -= m
        yield lhs, rel, rhs


def _digits(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The decimal digits of non-negative integers as ASCII, right-aligned in a ``(n, width)``
    uint8 block (leading columns unused), and how many digits each value has."""
    v = values.astype(np.uint64, copy=False)
    top = int(v.max()) if v.size else 0
    width = len(str(top))
    block = np.empty((v.shape[0], width), np.uint8)
    rest = v.copy()
    for col in range(width - 1, -1, -1):
        block[:, col] = rest % 10 + 48
        rest //= 10
    count = np.ones(v.shape[0], np.int64)
    for k in range(1, width):
        count += v >= 10**k
    return block, count


def format_lines(fields: list[bytes | np.ndarray]) -> bytes:
    """Lines made of ``fields`` in order: a ``bytes`` is the same in every line, an integer
    array gives each line its value in decimal. Vectorised: each field is a fixed-width block
    of a byte matrix, and a mask keeps each value's digits (numbers in a Python f-string
    cost about 1 us a line; this about a tenth)."""
    blocks, masks = [], []
    rows = next(f.shape[0] for f in fields if isinstance(f, np.ndarray))
    for field in fields:
        if isinstance(field, bytes):
            blocks.append(np.broadcast_to(np.frombuffer(field, np.uint8), (rows, len(field))))
            masks.append(np.ones((rows, len(field)), bool))
        else:
            block, count = _digits(field)
            blocks.append(block)
            masks.append(np.arange(block.shape[1])[None, :] >= (block.shape[1] - count)[:, None])
    return np.hstack(blocks)[np.hstack(masks)].tobytes()


def _format(spec: GraphSpec, lhs: np.ndarray, rel: np.ndarray, rhs: np.ndarray) -> bytes:
    if lhs.shape[0] == 0:
        return b""
    if spec.int_ids:
        return format_lines([lhs, b"\t", rel, b"\t", rhs, b"\n"])
    return format_lines([b"n", lhs, b"\tr", rel, b"\tn", rhs, b"\n"])


def write_graph(spec: GraphSpec, out_dir: Path, splits: tuple[float, float] = (0.05, 0.05),
                progress: Callable[[int], None] | None = None) -> dict[str, Path]:
    """Write ``train.tsv``, ``valid.tsv``, ``test.tsv`` into ``out_dir``; returns their paths.

    Each edge goes to valid / test with probabilities ``splits``, the rest to train.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    names = ("train", "valid", "test")
    paths = {name: out_dir / f"{name}.tsv" for name in names}
    split_rng = np.random.default_rng([spec.seed, 7])
    handles: dict[str, BinaryIO] = {name: open(paths[name], "wb") for name in names}
    try:
        for lhs, rel, rhs in generate_edges(spec):
            u = split_rng.random(lhs.shape[0])
            which = np.where(u < splits[0], 1, np.where(u < splits[0] + splits[1], 2, 0))
            for i, name in enumerate(names):
                sel = which == i
                handles[name].write(_format(spec, lhs[sel], rel[sel], rhs[sel]))
            if progress:
                progress(lhs.shape[0])
    finally:
        for handle in handles.values():
            handle.close()
    return paths
