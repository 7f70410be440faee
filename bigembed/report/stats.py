"""Reading a RUN's ``stats.jsonl`` into per-epoch figures for the training report.

Record kinds, one JSON object a line, each with a ``time``:

- ``{"start": {...}}``: a training session began (device, workers, kernels; ``rank`` when distributed);
- a bucket visit: ``epoch`` (0-based), ``bucket_index``, ``lhs``, ``rhs``, ``edges``, ``loss`` (mean per
  edge), ``seconds`` (training), ``io_wait_s`` (waiting for its partitions), ``edges_per_s``;
- ``{"epoch_end": {...}}``: a session finished an epoch (wall ``seconds``, ``commit_s``, partition
  ``loads``, ``max_rss_bytes``); absent in runs written before it, and in distributed runs;
- ``{"eval": {...}}``: validation after an epoch (``epoch`` 1-based, ``mrr``, ``hits@k``, ...);
- ``{"lock": "claim" | "release", ...}``: a distributed rank's bucket-lock traffic.

Damaged lines are skipped, each named (``stats.jsonl:LINE``) in :attr:`RunStats.damaged`:
a kill during an append leaves a torn last line by design (the file is appended to, not
written atomically), and a report of a killed run must still render. Unknown kinds are
ignored, so newer runs still read.

Epochs are numbered from 1 here, as people (and the training log) count them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class EpochFigures:
    """What one epoch's records add up to (every session that trained part of it)."""

    epoch: int  # 1-based
    buckets: int = 0  # bucket records (a bucket resumed mid-way, or retrained after a crash, counts twice)
    edges: int = 0
    loss_sum: float = 0.0  # sum over buckets of mean loss x edges
    train_s: float = 0.0
    io_wait_s: float = 0.0
    wall_s: float | None = None  # from epoch_end records
    commit_s: float | None = None
    loads: int | None = None
    prefetched: int | None = None
    max_rss_bytes: int | None = None
    validation: dict[str, Any] | None = None

    @property
    def mean_loss(self) -> float:
        return self.loss_sum / max(1, self.edges)

    @property
    def edges_per_s(self) -> float:
        """Edges per second of training (waiting for partitions and committing excluded)."""
        return self.edges / self.train_s if self.train_s > 0 else 0.0

    def as_row(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "buckets": self.buckets, "edges": self.edges, "mean_loss": self.mean_loss,
                "train_s": self.train_s, "io_wait_s": self.io_wait_s, "commit_s": self.commit_s,
                "wall_s": self.wall_s, "edges_per_s": self.edges_per_s, "loads": self.loads,
                "prefetched": self.prefetched, "max_rss_bytes": self.max_rss_bytes,
                "mrr": None if self.validation is None else self.validation["mrr"]}


@dataclass
class RunStats:
    """Everything ``stats.jsonl`` says, by kind."""

    path: Path
    buckets: list[dict[str, Any]] = field(default_factory=list)
    epoch_ends: list[dict[str, Any]] = field(default_factory=list)
    evals: list[dict[str, Any]] = field(default_factory=list)
    starts: list[dict[str, Any]] = field(default_factory=list)
    lock_records: int = 0
    damaged: list[str] = field(default_factory=list)  # "PATH:LINE: why"

    @property
    def ranks(self) -> int:
        return max((int(s.get("ranks", 1)) for s in self.starts), default=1)

    def epochs(self) -> list[EpochFigures]:
        """Per-epoch figures, in order, for every epoch with at least one bucket record."""
        by_epoch: dict[int, EpochFigures] = {}
        for r in self.buckets:
            e = by_epoch.setdefault(int(r["epoch"]) + 1, EpochFigures(int(r["epoch"]) + 1))
            e.buckets += 1
            e.edges += int(r["edges"])
            e.loss_sum += float(r["loss"]) * int(r["edges"])
            e.train_s += float(r["seconds"])
            e.io_wait_s += float(r.get("io_wait_s", 0.0))
        for r in self.epoch_ends:
            e = by_epoch.setdefault(int(r["epoch"]) + 1, EpochFigures(int(r["epoch"]) + 1))
            e.wall_s = (e.wall_s or 0.0) + float(r["seconds"])
            e.commit_s = (e.commit_s or 0.0) + float(r.get("commit_s", 0.0))
            if "loads" in r:
                e.loads = (e.loads or 0) + int(r["loads"])
                e.prefetched = (e.prefetched or 0) + int(r.get("prefetched", 0))
            if r.get("max_rss_bytes") is not None:
                e.max_rss_bytes = max(e.max_rss_bytes or 0, int(r["max_rss_bytes"]))
        for r in self.evals:  # the last validation of an epoch (a resumed run may repeat one)
            if int(r["epoch"]) in by_epoch:
                by_epoch[int(r["epoch"])].validation = r
        return [by_epoch[k] for k in sorted(by_epoch)]


# The numbers each kind must have for the report to use it.
_NEEDS = {"bucket": ("epoch", "bucket_index", "edges", "loss", "seconds"), "epoch_end": ("epoch", "seconds"),
          "eval": ("epoch", "mrr"), "start": ()}


def _numbers(record: dict[str, Any], keys: tuple[str, ...]) -> bool:
    return all(isinstance(record.get(k), int | float) and not isinstance(record.get(k), bool) for k in keys)


def _kind(record: Any) -> str | None:
    """The kind of a parsed line: None when it is not in a shape bigembed writes, "unknown"
    for a kind this version does not know (a newer bigembed's)."""
    if not isinstance(record, dict):
        return None
    for kind in ("start", "epoch_end", "eval"):
        if kind in record:
            body = record[kind]
            return kind if isinstance(body, dict) and _numbers(body, _NEEDS[kind]) else None
    if "lock" in record:
        return "lock"
    if "epoch" in record or "bucket_index" in record:
        return "bucket" if _numbers(record, _NEEDS["bucket"]) else None
    return "unknown"


def read_stats(run_dir: Path) -> RunStats:
    """Parse ``RUN/stats.jsonl`` (a run with no such file yet has no records)."""
    path = Path(run_dir) / "stats.jsonl"
    stats = RunStats(path)
    try:
        handle = open(path, encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return stats
    with handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                stats.damaged.append(f"{path}:{number}: not JSON ({exc.msg})")
                continue
            kind = _kind(record)
            if kind is None:
                stats.damaged.append(f"{path}:{number}: not a stats record")
            elif kind == "bucket":
                stats.buckets.append(record)
            elif kind == "lock":
                stats.lock_records += 1
            elif kind in ("start", "epoch_end", "eval"):
                getattr(stats, {"start": "starts", "epoch_end": "epoch_ends", "eval": "evals"}[kind]).append(
                    record[kind])
    return stats
