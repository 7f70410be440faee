"""Synthetic graphs with planted structure, for demos, tests and benchmarks.

Nodes have a popularity rank 0..N-1 and are split into ``communities`` groups: the
node of rank ``r`` is in community ``r % communities``, so a community holds every
C-th rank and its own popularity is again a power law. Each relation maps every
community to a target community (a seeded random permutation per relation). An edge
picks its lhs by a power-law (Zipf-like) popularity, a relation uniformly, and its rhs
by popularity among the target community of the lhs's community under that relation;
a ``noise`` fraction of rhs are uniform instead. Link prediction is therefore learnable
(the community and relation decide the rhs's group) and degrees are heavy-tailed.

Fast at any size (a billion edges in minutes, memory a few blocks whatever N):

- a popularity rank is drawn by inverting the power law's CDF analytically
  (:class:`_Zipf`, no table of N); a rank becomes a node id by a seeded affine
  bijection ``(a * rank + b) mod N``, which spreads the popular nodes over the ids;
- lines are formatted by numpy in groups of one layout (:class:`_Formatter`);
- edges come in blocks of ``_BLOCK``, each from its own seeded random stream, so the
  output depends on the seed and the spec only (not on chunking or threads). Threads
  (numpy releases the interpreter lock in its array loops) each make a block in their
  own reused buffers and write it when its turn comes, so blocks land in order.
"""

from __future__ import annotations

import math
import os
import threading
from collections import deque
from collections.abc import Callable, Generator, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, TypeVar

import numpy as np

from bigembed.errors import BigembedError

_BLOCK = 1 << 17  # edges per random stream (and per thread task: 1 MiB int64 arrays stay in cache)
_T = TypeVar("_T")
_U64 = np.uint64


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
            (self.nodes < 2**62, f"--nodes must be below 2**62, got {self.nodes}"),
            (self.edges >= 1, f"--edges must be >= 1, got {self.edges}"),
            (1 <= self.relations < 2**31, f"--relations must be between 1 and 2**31 - 1, got {self.relations}"),
            (1 <= self.communities <= self.nodes,
             f"--communities must be between 1 and --nodes ({self.nodes}), got {self.communities}"),
            (0.0 <= self.noise <= 1.0, f"--noise must be between 0 and 1, got {self.noise}"),
            (self.exponent >= 0.0, f"--exponent must be >= 0, got {self.exponent}"),
            (self.seed >= 0, f"--seed must be >= 0, got {self.seed}"),
        ]
        for ok, message in checks:
            if not ok:
                raise BigembedError(message)


class _Scratch:
    """Arrays reused by name, block after block (one per thread). Fresh memory costs a page
    fault per 4 KiB on first touch (microseconds each in a VM, more than the arithmetic), so
    the hot path writes into these with ``out=`` instead of allocating temporaries."""

    def __init__(self, reuse: bool = True) -> None:
        self.reuse = reuse
        self.arrays: dict[str, np.ndarray] = {}

    def __call__(self, name: str, n: int, dtype: type | np.dtype) -> np.ndarray:
        if not self.reuse:
            return np.empty(n, dtype)
        a = self.arrays.get(name)
        if a is None or a.shape[0] < n or a.dtype != dtype:
            a = self.arrays[name] = np.empty(max(n, 1024), dtype)
        return a[:n]


class _Zipf:
    """Draws members ``k = 0..m-1`` of groups whose member k weighs ``(b + k stride) ** -exponent``:
    the global popularity (one group: b = 1, stride 1, m = N) or the communities' (group c:
    b = c + 1, stride C, its members are the ranks c, c + C, ...).

    Member 0 is drawn with its exact probability (a point mass: the head is where a continuous
    approximation is off); the others by inverting the continuous density ``y ** -exponent``
    over ``y = b + (k - 1/2) stride`` analytically (``y = F^-1(u)``, no table of members).
    Uniforms below ``skip`` are left to the caller (the noise); the rescaling of the rest is
    folded into each group's constants, so a draw is two multiply-adds around one ``exp``."""

    def __init__(self, exponent: float, b: np.ndarray, stride: int, m: np.ndarray, skip: float = 0.0) -> None:
        self.s = 1.0 - exponent
        self.kind = "log" if abs(self.s) < 1e-9 else "linear" if self.s == 1.0 else "power"
        b = np.asarray(b, np.float64)
        lo, hi = self._integral(b + 0.5 * stride), self._integral(b + (np.asarray(m) - 0.5) * stride)
        head = b**-exponent
        p0 = head / (head + (hi - lo) / stride)
        self.top = skip + p0 * (1.0 - skip)  # u below: member 0
        rest = (1.0 - skip) * (1.0 - p0)
        self.mul = np.where(rest > 0, (hi - lo) / np.where(rest > 0, rest, 1.0), 0.0)  # F(y) = u mul + add
        self.add = lo - self.top * self.mul
        self.lo = lo
        self.stride = stride
        self.shift = 0.5 - b / stride  # k = floor(y / stride + shift)

    def _integral(self, y: np.ndarray) -> np.ndarray:
        return np.log(y) if self.kind == "log" else y**self.s / self.s

    def draw(self, u: np.ndarray, k: np.ndarray, g: _Scratch, group: np.ndarray | None = None) -> np.ndarray:
        """Members (into int64 ``k``) for uniforms ``u`` (overwritten) of groups ``group``
        (None: the only group). A rounding may give ``m``, and ``u < skip`` garbage: the
        caller fixes both."""
        n = u.shape[0]
        tables = (self.top, self.mul, self.add, self.lo, self.shift)
        per: list[float] | list[np.ndarray] = [float(x[0]) for x in tables] if group is None else \
            [np.take(x, group, out=g(f"zipf{i}", n, np.float64), mode="clip") for i, x in enumerate(tables)]
        top, mul, add, lo, shift = per
        head = np.less(u, top, out=g("head", n, np.bool_))
        u *= mul
        u += add  # F(y)
        if self.kind == "log":
            np.exp(u, out=u)
        elif self.kind == "power":
            np.maximum(u, lo, out=u)  # the head's u: keep the log's argument positive
            u *= self.s
            np.log(u, out=u)
            u *= 1.0 / self.s
            np.exp(u, out=u)
        u *= 1.0 / self.stride
        u += shift
        np.copyto(k, u, casting="unsafe")  # floor where u > 0 (the head's is replaced next)
        np.copyto(k, 0, where=head)
        return k


@dataclass(frozen=True)
class _Block:
    """A block of edges: int64 ``lhs``, ``rel``, ``rhs``; with splits, the first ``sizes[0]``
    edges are train, the next ``sizes[1]`` valid, the last ``sizes[2]`` test. (Edges are
    independent and identically drawn, so a multinomial split into runs is the same in law
    as a split drawn edge by edge, and needs no per-edge work.)"""

    lhs: np.ndarray
    rel: np.ndarray
    rhs: np.ndarray
    sizes: tuple[int, ...]


class _Sampler:
    """The planted structure (rank -> node bijection, communities, relation targets) and blocks."""

    def __init__(self, spec: GraphSpec) -> None:
        n, c = spec.nodes, spec.communities
        rng = np.random.default_rng([spec.seed, 0])
        hi = min(n, (2**63 - n) // n)  # mult * rank + add stays below 2**63
        while True:
            mult = int(rng.integers(1, max(hi, 2)))
            if math.gcd(mult, n) == 1:
                break
        self.mult, self.add = mult, int(rng.integers(0, n))
        self.targets = np.stack([rng.permutation(c) for _ in range(spec.relations)]).astype(np.int64)
        self.flat_targets = self.targets.ravel()
        self.popular = _Zipf(spec.exponent, np.array([1]), 1, np.array([n]))
        comm = np.arange(c)
        # members of community c: the ranks c, c + C, ... below N; u < noise picks a uniform node instead
        self.in_community = _Zipf(spec.exponent, comm + 1, c, (n - comm + c - 1) // c, skip=spec.noise)
        self.spec = spec

    def node(self, rank: np.ndarray) -> np.ndarray:
        """Node ids of popularity ranks (in place)."""
        rank *= self.mult
        rank += self.add
        np.remainder(rank, self.spec.nodes, out=rank)
        return rank

    def community(self) -> np.ndarray:
        """Each node's community, an array of N (for checks; generating needs no table of N)."""
        ranks = np.arange(self.spec.nodes, dtype=np.int64)
        comm = np.empty(self.spec.nodes, np.int64)
        comm[self.node(ranks.copy())] = ranks % self.spec.communities
        return comm

    def block(self, k: int, m: int, splits: tuple[float, float] | None = None,
              scratch: _Scratch | None = None) -> _Block:
        """Block ``k`` of ``m`` edges, from its own random stream (arrays in ``scratch``)."""
        spec, n, c, noise = self.spec, self.spec.nodes, self.spec.communities, self.spec.noise
        g = scratch or _Scratch(reuse=False)
        rng = np.random.Generator(np.random.SFC64([spec.seed, 1, k]))
        u = rng.random(out=g("u", m, np.float64))
        lhs = self.popular.draw(u, g("lhs", m, np.int64), g)
        np.minimum(lhs, n - 1, out=lhs)
        rng.random(out=u)
        rel = g("rel", m, np.int64)
        u *= spec.relations
        np.copyto(rel, u, casting="unsafe")
        np.minimum(rel, spec.relations - 1, out=rel)
        target, tmp = g("target", m, np.int64), g("tmp", m, np.int64)
        np.remainder(lhs, c, out=target)
        np.multiply(rel, c, out=tmp)
        target += tmp
        np.take(self.flat_targets, target, out=tmp, mode="clip")
        target, tmp = tmp, target
        # rhs: u below the noise fraction picks a uniform node, the rest a popular node of the target
        # community (the noisy ones draw member 0 there, replaced)
        rng.random(out=u)
        mask = g("mask", m, np.bool_)
        noisy = uniform = None
        if noise > 0:
            noisy = np.flatnonzero(np.less(u, noise, out=mask))
            uniform = np.minimum((u[noisy] * (n / noise)).astype(np.int64), n - 1)
        rhs = self.in_community.draw(u, g("rhs", m, np.int64), g, target)
        rhs *= c
        rhs += target
        np.subtract(rhs, c, out=rhs, where=np.greater_equal(rhs, n, out=mask))  # rounded past the last member
        if noisy is not None and uniform is not None:
            rhs[noisy] = uniform
        sizes: tuple[int, ...] = (m,)
        if splits is not None:
            p = [max(0.0, 1.0 - splits[0] - splits[1]), splits[0], splits[1]]
            split_rng = np.random.Generator(np.random.SFC64([spec.seed, 2, k]))
            sizes = tuple(int(x) for x in split_rng.multinomial(m, np.array(p) / sum(p)))
        return _Block(self.node(lhs), rel, self.node(rhs), sizes)


def _blocks(spec: GraphSpec) -> list[tuple[int, int]]:
    """(block index, edges in it) for the whole graph."""
    full, rest = divmod(spec.edges, _BLOCK)
    return [(k, _BLOCK) for k in range(full)] + ([(full, rest)] if rest else [])


def _workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def _ordered(jobs: Sequence[Callable[[], _T]], workers: int) -> Generator[_T, None, None]:
    """Results of ``jobs`` in order, computed by ``workers`` threads a few jobs ahead."""
    if workers <= 1 or len(jobs) <= 1:
        for job in jobs:
            yield job()
        return
    pool = ThreadPoolExecutor(workers, thread_name_prefix="bigembed-generate")
    pending: deque[Future[_T]] = deque()
    try:
        for job in jobs:
            pending.append(pool.submit(job))
            if len(pending) > workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def generate_edges(spec: GraphSpec, chunk: int | None = None) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Yield ``(lhs, rel, rhs)`` int64 arrays of at most ``chunk`` edges (default: a block),
    ``spec.edges`` in all; the edges do not depend on ``chunk``."""
    spec.validate()
    sampler = _Sampler(spec)
    jobs = [lambda k=k, m=m: sampler.block(k, m) for k, m in _blocks(spec)]
    for b in _ordered(jobs, _workers()):
        step = chunk or b.lhs.shape[0]
        for i in range(0, b.lhs.shape[0], step):
            yield b.lhs[i : i + step], b.rel[i : i + step], b.rhs[i : i + step]


# Formatting. A line is fixed bytes and integer fields. Lines whose fields have the same digit
# counts share one layout, so each such group is built as rows of 64-bit words (each field's
# digits shifted into place over a template of the fixed bytes) and copied to its lines' byte
# offsets by one fancy assignment through a view of the output as overlapping records of the
# group's line length. No per-byte masks, and the lines keep their order.

_MAX_DIGITS = 8  # fields below 10**8 take the grouped path, larger ones the masked one
_QUADS = np.frombuffer(b"".join(b"%04d" % i for i in range(10_000)), np.uint32).astype(_U64)  # "0000".."9999"
_LOW_QUAD = _QUADS << _U64(32)  # the last four of eight digits (bytes 4..7 in memory)
_QUAD_DIGITS = np.array([len(str(i)) for i in range(10_000)], np.uint8)
_HIGH_DIGITS = np.where(np.arange(10_000) > 0, _QUAD_DIGITS + 4, 0).astype(np.uint8)


def _eight_digits(v: np.ndarray, g: _Scratch | None = None, name: str = "") -> tuple[np.ndarray, np.ndarray]:
    """Values in [0, 10**8) as eight zero-padded ASCII digits in a uint64 (as they lie in
    memory: first digit in the low byte), and how many digits each value has (uint8)."""
    g = g or _Scratch(reuse=False)
    n = v.shape[0]
    hi, lo = g("hi", n, np.int64), g("lo", n, np.int64)
    np.floor_divide(v, 10_000, out=hi)
    np.multiply(hi, 10_000, out=lo)
    np.subtract(v, lo, out=lo)
    block, tmp = g("block" + name, n, np.uint64), g("quad", n, np.uint64)
    np.take(_LOW_QUAD, lo, out=block, mode="clip")
    block |= np.take(_QUADS, hi, out=tmp, mode="clip")
    count, tmp8 = g("count" + name, n, np.uint8), g("quad8", n, np.uint8)
    np.take(_HIGH_DIGITS, hi, out=count, mode="clip")
    np.maximum(count, np.take(_QUAD_DIGITS, lo, out=tmp8, mode="clip"), out=count)
    return block, count


class _Layout:
    """The words of one group's lines: per 64-bit word, its fixed bytes and the fields
    shifted into it (``(field, bits)``: left by ``bits``, right by ``-bits``)."""

    def __init__(self, fields: Sequence[bytes | int], digits: Sequence[int]) -> None:
        template = bytearray()
        placed = []
        for field in fields:
            if isinstance(field, bytes):
                template += field
            else:
                placed.append((field, len(template), digits[field]))
                template += bytes(digits[field])
        self.size = len(template)
        self.words = -(-self.size // 8)
        template += bytes(8 * self.words - self.size)
        self.fixed = [_U64(x) for x in np.frombuffer(bytes(template), np.uint64)]
        self.terms: list[list[tuple[int, int]]] = [[] for _ in range(self.words)]
        self.shifts = [_U64(8 * (8 - d)) for d in digits]  # aligns a field's digits to the low bytes
        self.record = np.dtype((np.void, self.size))
        for field, pos, d in placed:
            q, r = divmod(pos, 8)
            self.terms[q].append((field, 8 * r))
            if r + d > 8:
                self.terms[q + 1].append((field, -(64 - 8 * r)))

    def write(self, out: np.ndarray, offset: np.ndarray, blocks: Sequence[np.ndarray], g: _Scratch) -> None:
        n = offset.shape[0]
        values = [np.right_shift(b, s, out=g(f"value{i}", n, np.uint64)) for i, (b, s) in
                  enumerate(zip(blocks, self.shifts))]
        rows = g("rows", n * self.words, np.uint64).reshape(n, self.words)
        acc, tmp = g("acc", n, np.uint64), g("shifted", n, np.uint64)
        for w, terms in enumerate(self.terms):
            if not terms:
                rows[:, w] = self.fixed[w]
                continue
            for i, (field, bits) in enumerate(terms):
                dst = acc if i == 0 else tmp
                if bits >= 0:
                    np.left_shift(values[field], _U64(bits), out=dst)
                else:
                    np.right_shift(values[field], _U64(-bits), out=dst)
                if i:
                    acc |= tmp
            np.bitwise_or(acc, self.fixed[w], out=rows[:, w])
        src = np.ndarray((n,), self.record, buffer=rows, strides=(8 * self.words,))
        dst = np.ndarray((out.shape[0] - self.size + 1,), self.record, buffer=out, strides=(1,))
        dst[offset] = src


class _Formatter:
    """Lines of ``fields``: ``bytes`` are the same in every line, an ``int`` i is value array i."""

    def __init__(self, fields: Sequence[bytes | int]) -> None:
        self.fields = list(fields)
        self.values = sum(1 for f in fields if not isinstance(f, bytes))
        self.fixed = sum(len(f) for f in fields if isinstance(f, bytes))
        self.layouts: dict[tuple[int, ...], _Layout] = {}

    def layout(self, group: int) -> _Layout:
        """The layout of a group number (digit counts less one, base ``_MAX_DIGITS``, first field first)."""
        digits = []
        for _ in range(self.values):
            group, d = divmod(group, _MAX_DIGITS)
            digits.append(d + 1)
        key = tuple(reversed(digits))
        if key not in self.layouts:
            self.layouts[key] = _Layout(self.fields, key)
        return self.layouts[key]

    def format(self, digits: Sequence[tuple[np.ndarray, np.ndarray]],
               g: _Scratch | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The bytes (uint8) of the lines, from each value's :func:`_eight_digits`, and where
        each line starts in them."""
        g = g or _Scratch(reuse=False)
        n = digits[0][0].shape[0]
        key = g("key", n, np.int16 if self.values <= 4 else np.int64)  # digit counts less one, base 8
        length, offset = g("length", n, np.int64), g("offset", n, np.int64)
        key.fill(0)
        length.fill(self.fixed)
        for _, count in digits:
            key *= _MAX_DIGITS
            key += count
            key -= 1
            length += count
        np.cumsum(length, out=offset)
        out = g("out", int(offset[-1]), np.uint8)
        offset -= length
        present = np.bincount(key)
        groups = np.flatnonzero(present)
        if groups.size <= 256:  # a one-byte key sorts by radix, fast
            lut = np.zeros(present.shape[0], np.uint8)
            lut[groups] = np.arange(groups.size, dtype=np.uint8)
            order = np.argsort(np.take(lut, key, out=g("dense", n, np.uint8), mode="clip"), kind="stable")
        else:
            order = np.argsort(key, kind="stable")
        blocks = [np.take(b, order, out=g(f"sorted{i}", n, np.uint64), mode="clip")
                  for i, (b, _) in enumerate(digits)]
        start = 0
        for group, stop in zip(groups.tolist(), np.cumsum(present[groups]).tolist()):
            at = np.take(offset, order[start:stop], out=g("at", stop - start, np.int64), mode="clip")
            self.layout(group).write(out, at, [b[start:stop] for b in blocks], g)
            start = stop
        return out, offset


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


def _format_masked(fields: Sequence[bytes | np.ndarray], rows: int) -> np.ndarray:
    """Any non-negative integers: a byte matrix of fixed-width fields and a mask keeping each
    value's digits (about three times slower than the grouped path)."""
    blocks, masks = [], []
    for field in fields:
        if isinstance(field, bytes):
            blocks.append(np.broadcast_to(np.frombuffer(field, np.uint8), (rows, len(field))))
            masks.append(np.ones((rows, len(field)), bool))
        else:
            block, count = _digits(field)
            blocks.append(block)
            masks.append(np.arange(block.shape[1])[None, :] >= (block.shape[1] - count)[:, None])
    return np.hstack(blocks)[np.hstack(masks)]


def format_array(fields: Sequence[bytes | np.ndarray]) -> np.ndarray:
    """:func:`format_lines` as a uint8 array."""
    arrays = [f for f in fields if isinstance(f, np.ndarray)]
    rows = arrays[0].shape[0]
    if rows == 0:
        return np.empty(0, np.uint8)
    if any(int(a.min()) < 0 or int(a.max()) >= 10**_MAX_DIGITS for a in arrays):
        return _format_masked(fields, rows)
    index: list[bytes | int] = []
    for f in fields:
        index.append(f if isinstance(f, bytes) else len([x for x in index if not isinstance(x, bytes)]))
    digits = [_eight_digits(a.astype(np.int64, copy=False)) for a in arrays]
    return _Formatter(index).format(digits)[0]


def format_lines(fields: Sequence[bytes | np.ndarray]) -> bytes:
    """Lines made of ``fields`` in order: a ``bytes`` is the same in every line, a non-negative
    integer array gives each line its value in decimal. Vectorised (no Python per line)."""
    return format_array(fields).tobytes()


class _EdgeLines:
    """Formats edges as ``n<id>\\tr<rel>\\tn<id>`` lines, or ``<id>\\t<rel>\\t<id>`` with int ids."""

    def __init__(self, spec: GraphSpec) -> None:
        fields: list[bytes | int] = [0, b"\t", 1, b"\t", 2, b"\n"] if spec.int_ids else \
            [b"n", 0, b"\tr", 1, b"\tn", 2, b"\n"]
        self.formatter = _Formatter(fields)
        self.fast = spec.nodes <= 10**_MAX_DIGITS and spec.relations <= 10**_MAX_DIGITS
        self.rel_digits = _eight_digits(np.arange(spec.relations, dtype=np.int64)) \
            if self.fast and spec.relations <= 1 << 16 else None
        self.spec = spec

    def parts(self, b: _Block, keep: Sequence[bool], g: _Scratch) -> list[np.ndarray | None]:
        """The lines (uint8) of each run of ``b.sizes`` (train, valid, test), None for one not in
        ``keep``. The runs up to the last kept one are formatted together: one copy a layout."""
        ends = np.cumsum(b.sizes).tolist()
        kept = [i for i, k in enumerate(keep) if k and b.sizes[i]]
        out: list[np.ndarray | None] = [None] * len(keep)
        if not kept:
            return out
        if not self.fast:
            for i in kept:
                s = slice(ends[i] - b.sizes[i], ends[i])
                fields: list[bytes | np.ndarray] = [b.lhs[s], b"\t", b.rel[s], b"\t", b.rhs[s], b"\n"] \
                    if self.spec.int_ids else [b"n", b.lhs[s], b"\tr", b.rel[s], b"\tn", b.rhs[s], b"\n"]
                out[i] = _format_masked(fields, b.sizes[i])
            return out
        n = ends[kept[-1]]
        lhs, rel, rhs = b.lhs[:n], b.rel[:n], b.rhs[:n]
        if self.rel_digits is not None:
            rel_digits = (np.take(self.rel_digits[0], rel, out=g("block_rel", n, np.uint64), mode="clip"),
                          np.take(self.rel_digits[1], rel, out=g("count_rel", n, np.uint8), mode="clip"))
        else:
            rel_digits = _eight_digits(rel, g, "_rel")
        lines, starts = self.formatter.format([_eight_digits(lhs, g, "_lhs"), rel_digits,
                                               _eight_digits(rhs, g, "_rhs")], g)
        at = [int(starts[e]) if e < n else lines.shape[0] for e in [0, *ends]]
        for i in kept:
            out[i] = lines[at[i] : at[i + 1]]
        return out


class _Stopped(Exception):
    """Another block failed; this one gives up its turn."""


class _Turns:
    """Blocks are written in order by the threads that made them: block k waits for k - 1.
    A failure anywhere stops the blocks still waiting."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.next = 0
        self.failed = False

    def wait(self, k: int) -> None:
        with self.cond:
            while self.next != k and not self.failed:
                self.cond.wait()
            if self.failed:
                raise _Stopped

    def done(self, k: int) -> None:
        with self.cond:
            self.next = k + 1
            self.cond.notify_all()

    def fail(self) -> None:
        with self.cond:
            self.failed = True
            self.cond.notify_all()


def write_edges(spec: GraphSpec, train: BinaryIO, valid: BinaryIO | None = None, test: BinaryIO | None = None,
                splits: tuple[float, float] = (0.05, 0.05), progress: Callable[[int], None] | None = None) -> None:
    """Write the graph's lines to binary streams, in order: each edge goes to ``valid`` /
    ``test`` with probabilities ``splits``, the rest to ``train``. A split whose stream is
    None is drawn (so the others do not change) but neither formatted nor written.

    Threads make blocks in their own reused buffers and write them in turn, so the streams
    see whole blocks in order; ``progress`` is called in this thread with each block's size.
    """
    spec.validate()
    sampler = _Sampler(spec)
    lines = _EdgeLines(spec)
    streams = (train, valid, test)  # the order of _Block.sizes
    keep = [s is not None for s in streams]
    local = threading.local()
    turns = _Turns()

    def job(k: int, m: int) -> int:
        try:
            g = getattr(local, "scratch", None)
            if g is None:
                g = local.scratch = _Scratch()
            parts = lines.parts(sampler.block(k, m, splits, g), keep, g)
            turns.wait(k)
            for stream, part in zip(streams, parts):
                if stream is not None and part is not None and part.size:
                    stream.write(part.data)
            turns.done(k)
            return m
        except BaseException:
            turns.fail()
            raise

    jobs = [lambda k=k, m=m: job(k, m) for k, m in _blocks(spec)]
    results = _ordered(jobs, _workers())
    try:
        for m in results:
            if progress:
                progress(m)
    except BaseException:
        turns.fail()
        raise
    finally:
        results.close()


def write_graph(spec: GraphSpec, out_dir: Path, splits: tuple[float, float] = (0.05, 0.05),
                progress: Callable[[int], None] | None = None) -> dict[str, Path]:
    """Write ``train.tsv``, ``valid.tsv``, ``test.tsv`` into ``out_dir``; returns their paths.

    Each edge goes to valid / test with probabilities ``splits``, the rest to train.
    """
    spec.validate()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    names = ("train", "valid", "test")
    paths = {name: out_dir / f"{name}.tsv" for name in names}
    handles: dict[str, BinaryIO] = {}
    try:
        for name in names:
            handles[name] = open(paths[name], "wb")
        write_edges(spec, handles["train"], handles["valid"], handles["test"], splits, progress)
    finally:
        for handle in handles.values():
            handle.close()
    return paths
