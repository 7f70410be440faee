"""Crash-safety torture test: SIGKILL training at random instants, then damage checkpoints.

Part A, kill loop (per partition count in ``--partitions``, default ``2,1``): a graph is
generated and imported (for -p 1 a bigger one, ``--slab-*``: 20,000 nodes, 2.5M edges, dim 16,
3 epochs, so its single bucket has 3 slabs of up to 1M edges), trained once uninterrupted (the
reference, which also times start-up, commits and the time between them), then the same
``bigembed train`` command (deterministic, ``checkpoint.interval_seconds=0`` so a version is
committed after every slab, inside a bucket too, ``checkpoint.keep_versions=2`` so garbage
collection runs) is started again and again in another RUN and SIGKILLed at a random instant
(seeded). A commit moves CURRENT's position (epoch, bucket, slab) one step; each run is allowed
about 0.8 x remaining commits / remaining kills of them (one short of the end while kills
remain, and never past an epoch in which no kill has landed yet), and is killed at a delay drawn
uniformly from 0.2 s to a little past the start of the commit after those (start-up and commit
intervals are learnt as the loop goes), or, when that commit begins sooner (the RUN is polled
every 3 ms), a few milliseconds into it. So progress per attempt is bounded and kills land in
start-up, in training, inside buckets and inside commits. Killing goes on until ``--kills``
kills happened and every epoch had one; a RUN that finishes before that is compared with the
reference and followed by a fresh RUN. After every kill, checked independently of the library
(manifest JSON, shard paths inside the RUN, zarr read, shape, sha256 of the raw bytes, position
within the epoch and bucket):

1. every version (a folder holding ``manifest.json``; a folder garbage collection keeps only
   for shards newer versions use holds ``manifest.retired.json`` and is no version) verifies:
   among the newest ``KEEP`` of CURRENT's parent chain a failure, elsewhere reported apart as a
   "stale ancestor manifest";
2. CURRENT exists once a version was committed, and its position (epoch, bucket, slab) never
   goes back ("versions lost" counts the kills after which it did);
3. the next run's ``resuming RUN from vN: epoch E, bucket B of T[, slab S]`` line names
   CURRENT's version and position, with no warning (a "clean resume"), never an earlier one.

"Kills inside a bucket" counts the kills in training or a commit while CURRENT stood inside a
bucket (slab > 0), in brackets those whose run had itself committed a slab of that bucket
(CURRENT before and after in the same bucket, other slabs); "commits inside a bucket" counts
the ``committed vN at epoch E, bucket B/T, slab s/S`` lines. Every RUN trained to the end must
be bit-identical (``np.array_equal``) to the reference: ``export --format npy`` and every shard
of the last version.

Part B, damage matrix: a small run keeping 3 versions is copied once per case, one thing
is damaged (shard chunk flipped/truncated/deleted; CURRENT's manifest garbage/empty/
missing; CURRENT garbage/empty/missing/invalid UTF-8/a directory/naming a collected
version; impossible positions; shard paths leaving the RUN, whose targets are valid
copies so only a path check catches them; a staged folder v(N+1) without a manifest, as a
kill during staging leaves; CURRENT referencing shards of a retired folder), then
``bigembed eval RUN DATA`` and ``bigembed train`` (one epoch more) run on it. A case passes
when neither prints a traceback, training resumes from the newest version that verifies with
a ``warning:`` line (or exits 1 with one ``error:`` line; for the staged and retired cases,
where nothing is damaged, from CURRENT, warning or not), eval ranks a version that verifies
(or exits 1 with one ``error:`` line), and no version that verified was deleted. Besides,
``staged-leftover`` checks that train removed the staged folder, and ``retired-folder`` that
the retired folder survives while a version references its shards and that ``eval --version``
refuses it without listing it among the committed versions.

Usage::

    python benchmarks/torture.py                  # A (-p 2: 100 kills, -p 1: 30) and B, ~10 min on 2 cores
    python benchmarks/torture.py --quick          # smoke run: small graphs, 12 + 6 kills, all damage cases
    python benchmarks/torture.py --skip-kill      # damage matrix only
    python benchmarks/torture.py --skip-damage --partitions 2 --kills 200 --seed 7
    python benchmarks/torture.py --skip-kill --case current-dir --case shard-path-dotdot

Options: ``--nodes --edges --epochs --dim`` size the kill-loop graph and run, ``--slab-nodes
--slab-edges --slab-epochs --slab-dim`` those of -p 1 (``--slab-edges 0``: the same graph);
``--partitions 2,1`` and ``--kills 100,30`` (one count per partition count, the last
repeats); ``--seed`` seeds the graph and every kill delay; ``--workdir`` (default
/tmp/bigembed-torture, emptied at the start when it holds a previous torture run) keeps
every RUN, log and damaged copy for reproduction (``WORKDIR/damage/CASE/damaged`` is the
damaged RUN before anything ran on it); ``--bigembed`` the executable (default: the one
beside this Python). A JSON summary is written to ``WORKDIR/summary.json``.

Exit status: 0 when every check passes, 1 otherwise.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np

MARKER = ".bigembed-torture"
RESUMING = re.compile(r"resuming .* from v(\d+): epoch (\d+), bucket (\d+) of \d+(?:, slab (\d+))?")
COMMITTED = re.compile(r"committed v(\d+)")
COMMITTED_IN_BUCKET = re.compile(r"committed v\d+ at epoch \d+, bucket \d+/\d+, slab \d+/\d+")
RETIRED = "manifest.retired.json"
STARTED = re.compile(r"worker thread\(s\)|^training on ")
KEEP = 2  # checkpoint.keep_versions of the kill loop


# ---------------------------------------------------------------- independent checks of a RUN

def current_version(run: Path) -> int | None:
    """The version CURRENT names, or None when it is missing or not ``vN``."""
    try:
        m = re.fullmatch(rb"v(\d+)\s*", (run / "CURRENT").read_bytes())
    except OSError:
        return None
    return int(m.group(1)) if m else None


def version_folders(run: Path) -> list[int]:
    root = run / "checkpoints"
    if not root.is_dir():
        return []
    return sorted(int(p.name[1:]) for p in root.iterdir() if re.fullmatch(r"v\d+", p.name))


def orphans(run: Path) -> set[int]:
    """Folders newer than CURRENT that hold a manifest: a commit killed between its manifest and
    CURRENT. They survive a restart until the next commit collects them."""
    cur = current_version(run)
    return {v for v in version_folders(run)
            if (cur is None or v > cur) and (run / "checkpoints" / f"v{v}" / "manifest.json").exists()}


def staged(run: Path, old: set[int]) -> bool:
    """Whether a commit is under way: a version folder newer than CURRENT that was not there before."""
    cur = current_version(run)
    return any((cur is None or v > cur) and v not in old for v in version_folders(run))


def read_manifest_raw(run: Path, version: int) -> dict[str, Any] | str:
    """The manifest of ``version`` as JSON, or a string saying why it cannot be read."""
    path = run / "checkpoints" / f"v{version}" / "manifest.json"
    try:
        raw = json.loads(path.read_bytes())
    except FileNotFoundError:
        return "no manifest"
    except (OSError, ValueError) as exc:
        return f"manifest unreadable ({type(exc).__name__})"
    return raw if isinstance(raw, dict) else "manifest is not an object"


def shard_problem(run: Path, key: str, entry: Any) -> str | None:
    """Why the shard ``entry`` of a manifest does not verify, or None."""
    import zarr

    if not isinstance(entry, dict) or not {"path", "sha256", "shape"} <= entry.keys():
        return f"{key}: malformed entry"
    rel = str(entry["path"])
    if os.path.isabs(rel) or ".." in Path(rel).parts or not rel.startswith("checkpoints/"):
        return f"{key}: path {rel!r} leaves the RUN's checkpoints"
    try:
        array = zarr.open_array(str(run / rel), mode="r")[...]
    except Exception as exc:  # noqa: BLE001 - any failure to read is what we report
        return f"{key}: unreadable ({type(exc).__name__})"
    if list(array.shape) != list(entry["shape"]):
        return f"{key}: shape {list(array.shape)} != {entry['shape']}"
    if hashlib.sha256(np.ascontiguousarray(array).data).hexdigest() != entry["sha256"]:
        return f"{key}: sha256 mismatch"
    return None


def manifest_position(raw: dict[str, Any]) -> tuple[int, int, int] | None:
    """(epoch, bucket, slab) of a manifest; slab 0 (the bucket's start) when absent."""
    try:
        pos = raw["position"]
        return int(pos["epoch"]), int(pos["bucket"]), int(pos.get("slab", 0))
    except (KeyError, TypeError, ValueError, AttributeError):
        return None


def has_manifest(run: Path, version: int) -> bool:
    """Whether folder ``vN`` is a version: it holds ``manifest.json`` (a retired one, kept only
    for shards newer versions use, holds ``manifest.retired.json`` instead)."""
    return (run / "checkpoints" / f"v{version}" / "manifest.json").is_file()


def retired_folders(run: Path) -> list[int]:
    return [v for v in version_folders(run) if (run / "checkpoints" / f"v{v}" / RETIRED).is_file()]


def version_problem(run: Path, version: int, buckets: int, slabs: int = 1) -> str | None:
    """Why ``version`` does not verify (manifest, position, every shard), or None. ``slabs``:
    the most slabs a bucket has (a position's slab lies in 0 .. slabs - 1)."""
    raw = read_manifest_raw(run, version)
    if isinstance(raw, str):
        return f"v{version}: {raw}"
    if raw.get("format") != "bigembed-checkpoint" or raw.get("version") != version:
        return f"v{version}: not this version's checkpoint manifest"
    pos = manifest_position(raw)
    if pos is None or pos[0] < 0 or not 0 <= pos[1] < buckets or not 0 <= pos[2] < slabs:
        return (f"v{version}: impossible position {raw.get('position')!r} ({buckets} buckets an epoch, "
                f"at most {slabs} slab(s) a bucket)")
    shards = raw.get("shards")
    if not isinstance(shards, dict) or not shards:
        return f"v{version}: no shards"
    for key, entry in shards.items():
        problem = shard_problem(run, key, entry)
        if problem:
            return f"v{version}: {problem}"
    return None


def intact_versions(run: Path, buckets: int) -> list[int]:
    return [v for v in version_folders(run) if version_problem(run, v, buckets) is None]


def chain_problems(run: Path, buckets: int, slabs: int = 1) -> list[tuple[int, str]]:
    """(depth, problem) of every folder that holds ``manifest.json`` (a version; retired
    folders are not): depth 0 is CURRENT, 1 its parent, ... along CURRENT's parent chain, and
    depth 99 for a version off that chain (above CURRENT: a commit killed between its
    manifest and CURRENT; below: not yet collected)."""
    version, problems, depth_of = current_version(run), [], {}
    while version is not None and version not in depth_of:
        depth_of[version] = len(depth_of)
        raw = read_manifest_raw(run, version)
        if raw == "no manifest" and version != current_version(run):
            del depth_of[version]
            break  # collected or retired: the chain of versions ends here
        version = raw.get("parent") if isinstance(raw, dict) else None
    for v in sorted(set(depth_of) | {v for v in version_folders(run) if has_manifest(run, v)}):
        problem = version_problem(run, v, buckets, slabs)
        if problem:
            problems.append((depth_of.get(v, 99), problem))
    return problems


def committed_position(run: Path) -> tuple[int, int, int, int] | None:
    """(version, epoch, bucket, slab) of CURRENT, or None."""
    version = current_version(run)
    raw = read_manifest_raw(run, version) if version is not None else "none"
    pos = manifest_position(raw) if isinstance(raw, dict) else None
    return None if version is None or pos is None else (version, *pos)


# ---------------------------------------------------------------- processes

@dataclass
class Proc:
    """A ``bigembed`` process whose merged output is read, line by line with times, on a thread."""

    popen: subprocess.Popen[str]
    t0: float
    lines: list[tuple[float, str]] = field(default_factory=list)
    thread: threading.Thread | None = None

    @classmethod
    def spawn(cls, cmd: list[str]) -> Proc:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        popen = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                                 errors="replace")
        proc = cls(popen, time.monotonic())
        proc.thread = threading.Thread(target=proc._read, daemon=True)
        proc.thread.start()
        return proc

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            self.lines.append((time.monotonic() - self.t0, line.rstrip("\n")))

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def started_at(self) -> float | None:
        return next((t for t, line in list(self.lines) if STARTED.search(line)), None)

    def finish(self, kill: bool) -> int:
        if kill and self.popen.poll() is None:
            os.kill(self.popen.pid, signal.SIGKILL)
        rc = self.popen.wait()
        assert self.thread is not None
        self.thread.join(10)
        return rc

    def text(self) -> str:
        return "\n".join(line for _, line in self.lines)


def run_cli(cmd: list[str], timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, errors="replace", timeout=timeout)


def must(cmd: list[str]) -> None:
    done = run_cli(cmd)
    if done.returncode:
        sys.exit(f"torture: {' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-2000:]}")


# ---------------------------------------------------------------- part A: kill loop

@dataclass
class Pace:
    """Running estimates (s): spawn to training start and to the first commit, the time between
    two commits (a bucket, or a slab when a bucket has several), one commit."""

    startup: float = 3.0
    first: float = 5.0
    bucket: float = 2.0
    commit: float = 0.05

    def update(self, proc: Proc, first_commit: float | None, killed_at: float | None = None) -> None:
        """Learn from a run: when its first commit began (seen by polling), its commit log lines."""
        start = proc.started_at()
        if start is not None:
            self.startup = 0.7 * self.startup + 0.3 * start
        if first_commit is not None:
            self.first = 0.7 * self.first + 0.3 * first_commit
        elif start is not None and killed_at is not None and killed_at > self.first:  # no commit by then
            self.first = 0.7 * self.first + 0.3 * (killed_at + 0.3)
        times = [t for t, line in proc.lines if COMMITTED.search(line)]
        for a, b in pairwise(times):
            self.bucket = 0.7 * self.bucket + 0.3 * (b - a)


@dataclass
class Shape:
    """The commits of a kill-loop run: v0, then (``checkpoint.interval_seconds=0``) one after
    every slab of every bucket, the last slab's being the bucket's own commit."""

    buckets: int
    slabs: int  # slabs a bucket (every bucket of the loop's graph has as many)
    epochs: int

    @property
    def per_epoch(self) -> int:
        return self.buckets * self.slabs

    @property
    def commits(self) -> int:
        return 1 + self.epochs * self.per_epoch

    def done(self, pos: tuple[int, int, int, int] | None) -> int:
        """Commits made when CURRENT is ``pos`` (version, epoch, bucket, slab)."""
        return 0 if pos is None else 1 + (pos[1] * self.buckets + pos[2]) * self.slabs + pos[3]


@dataclass
class KillReport:
    partitions: int
    graph: str = ""
    slabs: int = 1
    kills: int = 0
    clean_resumes: int = 0
    resumes: int = 0
    fresh_starts: int = 0
    versions_lost: int = 0
    in_commit: int = 0
    in_bucket: int = 0  # kills in training/commit with CURRENT inside a bucket (slab > 0)
    slab_moves: int = 0  # of which: the killed run had committed a slab of the bucket it was killed in
    commits_in_bucket: int = 0  # "committed vN at ..., slab s/S" lines of the loop's runs
    runs: int = 0  # RUNs trained to the end (a RUN that finishes before the kills are done is followed by a fresh one)
    identical_runs: int = 0
    retired_seen: int = 0  # most folders with manifest.retired.json seen at once
    phases: Counter[str] = field(default_factory=Counter)
    per_epoch: Counter[int] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    reference_s: float = 0.0
    commit_ms: float = 0.0
    loop_s: float = 0.0
    identical: bool | None = None
    stale: int = 0
    missing: list[int] = field(default_factory=list)
    stale_example: str = ""
    final_version: int | None = None


def train_cmd(bigembed: str, data: Path, run: Path, epochs: int, dim: int, extra: list[str]) -> list[str]:
    return [bigembed, "train", str(data), "-o", str(run), "--epochs", str(epochs), "--dim", str(dim),
            "--deterministic", "--set", "checkpoint.interval_seconds=0", "--set", f"checkpoint.keep_versions={KEEP}",
            "--no-progress", *extra]


def reference_run(cmd: list[str], run: Path) -> tuple[Pace, float, float, str]:
    """Run ``cmd`` to the end, polling the RUN to time commits: (pace, seconds, median commit ms, log)."""
    proc, staged_at, commits = Proc.spawn(cmd), {}, []
    while proc.popen.poll() is None:
        now, cur = proc.elapsed(), current_version(run)
        for v in version_folders(run):
            if cur is None or v > cur:
                staged_at.setdefault(v, now)
        if cur is not None and cur in staged_at:
            commits.append(now - staged_at.pop(cur))
        time.sleep(0.004)
    seconds = proc.elapsed()
    if proc.finish(kill=False):
        sys.exit(f"torture: reference run failed:\n{proc.text()[-3000:]}")
    pace, commit_times = Pace(), [t for t, line in proc.lines if COMMITTED.search(line)]
    pace.startup = proc.started_at() or pace.startup
    if len(commit_times) > 1:  # a fresh run's first commit comes late (initial table, warm-up): guess low
        pace.first = min(commit_times[0], pace.startup + 2 * float(np.median(np.diff(commit_times))))
        pace.bucket = float(np.median(np.diff(commit_times)))
    pace.commit = float(np.median(commits)) if commits else 0.05
    return pace, seconds, pace.commit * 1000, proc.text()


def choose_kill(rng: random.Random, pace: Pace, shape: Shape, done: int, kills_left: int,
                bare: list[int]) -> tuple[int, float]:
    """(commits the run may make, kill delay in s) for the next run, CURRENT having made ``done``
    of the run's commits.

    The commits allowed average 0.8 x remaining commits / remaining kills (progress per attempt
    is bounded by the commit watch of :func:`wait_for_kill`, so the kills are not used up
    early and spread over every epoch), are never more than leave the run one commit short of
    its end while kills remain, and never take the run past the end of an epoch in ``bare``
    (no kill there yet). With the kills done but an epoch bare, the run is sent into that
    epoch. A run allowed none is killed uniformly between 0.2 s and a little past its first
    commit (start-up, training, or, through :func:`wait_for_kill`, inside that commit); a run
    allowed n is killed during its (n+1)-th bucket or slab, or commit."""
    remaining = shape.commits - done
    if kills_left > 0:
        m = 0.8 * remaining / kills_left
        allow = min(int(m) + (rng.random() < m - int(m)), remaining - 1)
    else:
        allow = rng.randint(max(0, (bare[0] - 1) * shape.per_epoch + 1 - done), bare[0] * shape.per_epoch - done)
    if bare:  # never commit past an epoch in which no kill has landed yet
        allow = min(allow, bare[0] * shape.per_epoch - done)
    allow = max(0, allow)
    nth = pace.first + allow * pace.bucket  # when commit number allow + 1 begins
    low = 0.2 if allow == 0 else pace.first + (allow - 1) * pace.bucket + 0.3 * pace.bucket
    return allow, rng.uniform(low, (1.15 if allow == 0 else 1.3) * nth + 0.3)


def wait_for_kill(proc: Proc, run: Path, allow: int, delay: float, pace: Pace, rng: random.Random) -> float | None:
    """Sleep until the kill instant: ``delay`` after spawn, or a moment into the commit after
    the ``allow`` commits the run may make, whichever comes first. Returns when the run's
    first commit began (or None)."""
    last, done, first, old = current_version(run), 0, None, orphans(run)
    while proc.popen.poll() is None and proc.elapsed() < delay:
        if proc.started_at() is not None:  # the staged leftovers of the last kill are gone by now
            cur = current_version(run)
            if cur != last:
                last, done = cur, done + 1
                if done > allow:  # a whole commit slipped between two polls: stop here
                    break
            if staged(run, old):  # a commit has begun
                first = proc.elapsed() if first is None else first
                if done >= allow:
                    time.sleep(rng.uniform(0.0, 1.5 * pace.commit))
                    break
        time.sleep(0.003)
    return first


def kill_phase(proc: Proc, run: Path, spawned_version: int | None, old: set[int]) -> str:
    """Where the kill landed: start-up, commit (staged folder, temp file, or an unlogged commit) or training."""
    if proc.started_at() is None:
        return "start-up"
    cur = current_version(run)
    logged = [int(m.group(1)) for _, line in proc.lines if (m := COMMITTED.search(line))]
    last_logged = max(logged, default=spawned_version if spawned_version is not None else -1)
    temps = any(".tmp-" in p.name for folder in (run, run / "checkpoints") if folder.is_dir()
                for p in folder.iterdir())
    if staged(run, old) or temps or (cur is not None and cur > last_logged):
        return "commit"
    return "training"


def check_resume(proc: Proc, spawned: tuple[int, int, int, int] | None, report: KillReport) -> None:
    """Check (3) on a run's own output: it resumes exactly where CURRENT stood at its start
    (version, epoch, bucket, slab), never before it."""
    text = proc.text()
    report.commits_in_bucket += len(COMMITTED_IN_BUCKET.findall(text))
    if "Traceback" in text or re.search(r"^error:", text, re.M):
        report.failures.append(f"run printed an error:\n{text[-1500:]}")
    m = RESUMING.search(text)
    if m is None:
        if spawned is not None and re.search(r"^started |starting over", text, re.M):
            report.failures.append(f"started afresh although v{spawned[0]} was committed")
            report.versions_lost += 1
        elif spawned is None and "started " in text:
            report.fresh_starts += 1
        return
    report.resumes += 1
    got = (int(m.group(1)), int(m.group(2)) - 1, int(m.group(3)) - 1, int(m.group(4) or 0))
    if spawned is None or got[1:] < spawned[1:]:
        report.failures.append(f"resumed from v{got[0]} {got[1:]}, but CURRENT was {spawned}")
        report.versions_lost += 1
    elif got == spawned and not re.search(r"^warning:", text, re.M):
        report.clean_resumes += 1
    else:
        report.failures.append(f"resume from {got} with CURRENT {spawned}: {text[:300]}")


def check_after_kill(run: Path, shape: Shape, best: tuple[int, int, int, int] | None, report: KillReport,
                     phase: str = "") -> None:
    """Checks (1) and (2) after a kill. A version (a folder holding ``manifest.json``; retired
    folders are not versions) that does not verify is a failure among the newest ``KEEP`` of
    CURRENT's chain, and counted apart (``stale``) elsewhere."""
    for depth, problem in chain_problems(run, shape.buckets, shape.slabs):
        if depth < KEEP:
            report.failures.append(f"kill {report.kills}: kept version does not verify: {problem}")
        else:
            report.stale += 1
            v = int(problem.split(":")[0][1:])
            raw = read_manifest_raw(run, v)
            own = [k for k, e in (raw.get("shards", {}) if isinstance(raw, dict) else {}).items()
                   if str(e.get("path", "")).startswith(f"checkpoints/v{v}/") and not (run / e["path"]).exists()]
            how = (f"{len(own)} shard(s) of its own folder gone, a half-deleted folder" if own else
                   "shards in older folders gone")
            report.stale_example = report.stale_example or (
                f"kill {report.kills} (in {phase}): {problem} (depth {depth}; {how})")
    report.retired_seen = max(report.retired_seen, len(retired_folders(run)))
    now = committed_position(run)
    if best is not None and (now is None or now[1:] < best[1:]):
        report.versions_lost += 1
        report.failures.append(f"kill {report.kills}: CURRENT went from {best} to {now}")


def kill_once(cmd: list[str], run: Path, shape: Shape, kills_left: int, pace: Pace,
              rng: random.Random, report: KillReport) -> bool:
    """Start training, SIGKILL it (or let it finish), check the RUN; True when the run has finished."""
    spawned = committed_position(run)
    done = shape.done(spawned)
    epoch = 1 if spawned is None else spawned[1] + 1  # the epoch being trained (1-based)
    missing = [e for e in range(1, shape.epochs + 1) if report.per_epoch[e] == 0]
    bare = [e for e in missing if e >= epoch]
    # no kills left (or only the final log lines to go), or an epoch lacks a kill but this RUN is past it
    finishing = done >= shape.commits or (kills_left <= 0 and not bare)
    allow, delay = (0, 0.0) if finishing else choose_kill(rng, pace, shape, done, kills_left, bare)
    old = orphans(run)
    proc = Proc.spawn(cmd)  # a fresh run commits v0 before training starts, unwatched: allow one less
    first = None if finishing else wait_for_kill(proc, run, max(0, allow - (spawned is None)), delay, pace, rng)
    exited, at_kill, killed_at = proc.popen.poll() is not None, committed_position(run), proc.elapsed()
    rc = proc.finish(kill=not finishing)
    check_resume(proc, spawned, report)
    pace.update(proc, first, None if exited else killed_at)
    if exited or finishing:
        if rc != 0:
            report.failures.append(f"train exited {rc} by itself:\n{proc.text()[-2000:]}")
        return True
    report.kills += 1
    phase = kill_phase(proc, run, None if spawned is None else spawned[0], old)
    report.phases[phase] += 1
    report.in_commit += phase == "commit"
    if phase != "start-up" and at_kill is not None and at_kill[3] > 0:
        report.in_bucket += 1
        report.slab_moves += spawned is not None and spawned[1:3] == at_kill[1:3] and spawned[3] != at_kill[3]
    report.per_epoch[1 if at_kill is None else min(at_kill[1] + 1, shape.epochs)] += 1
    check_after_kill(run, shape, spawned, report, phase)
    return False


def compare_runs(bigembed: str, ref: Path, run: Path, work: Path) -> tuple[bool, str]:
    """Exported npy files and every shard of the last versions: all bit-identical?"""
    outs = []
    for name, r in (("ref", ref), ("killed", run)):
        out = work / f"export-{name}"
        shutil.rmtree(out, ignore_errors=True)
        done = run_cli([bigembed, "export", str(r), "-o", str(out), "--format", "npy", "--no-progress"])
        if done.returncode:
            return False, f"export of {r} failed: {done.stderr.strip()[-300:]}"
        outs.append(out)
    npys = sorted(p.name for p in outs[0].glob("*.npy"))
    for name in npys:
        if not np.array_equal(np.load(outs[0] / name), np.load(outs[1] / name)):
            return False, f"{name} differs"
    import zarr

    raws = [read_manifest_raw(r, current_version(r) or 0) for r in (ref, run)]
    if not all(isinstance(r, dict) for r in raws):
        return False, "a final manifest is unreadable"
    a, b = raws  # type: ignore[misc]
    if sorted(a["shards"]) != sorted(b["shards"]) or a["position"] != b["position"]:
        return False, "final manifests list different shards or positions"
    for key in a["shards"]:
        x = zarr.open_array(str(ref / a["shards"][key]["path"]), mode="r")[...]
        y = zarr.open_array(str(run / b["shards"][key]["path"]), mode="r")[...]
        if not np.array_equal(x, y):
            return False, f"shard {key} differs"
    return True, f"{len(npys)} npy files and {len(a['shards'])} shards equal"


def kill_loop(args: argparse.Namespace, work: Path, graph: Path, P: int, kills: int, seed: int,
              epochs: int, dim: int) -> KillReport:
    report = KillReport(P)
    data, ref = work / f"data-p{P}", work / f"ref-p{P}"
    must([args.bigembed, "import", str(graph / "train.tsv"), "--split", f"valid={graph / 'valid.tsv'}",
          "--split", f"test={graph / 'test.tsv'}", "-o", str(data), "-p", str(P), "--no-progress"])
    buckets = P * P
    print(f"\n== kill loop, -p {P}: reference run ...", flush=True)
    pace, report.reference_s, report.commit_ms, log = reference_run(
        train_cmd(args.bigembed, data, ref, epochs, dim, []), ref)
    final_ref = committed_position(ref)
    assert final_ref is not None
    report.slabs = (final_ref[0]) // (epochs * buckets)  # v0, then slabs commits a bucket
    shape = Shape(buckets, report.slabs, epochs)
    if shape.commits != final_ref[0] + 1 or final_ref[1:] != (epochs, 0, 0):
        sys.exit(f"torture: the reference run ended at {final_ref}, expected v{shape.commits - 1} at ({epochs}, 0, 0)")
    m = re.search(r"started .*: (\d+) nodes in \d+ partitions, (\d+) training edges", log)
    report.graph = f"{m.group(1)} nodes, {m.group(2)} training edges" if m else "?"
    report.graph += f", dim {dim}, {epochs} epochs, {buckets} bucket(s) of {shape.slabs} slab(s)"
    print(f"reference: {report.reference_s:.1f} s ({report.graph}; {shape.commits} commits); start-up "
          f"{pace.startup:.1f} s, first commit {pace.first:.1f} s, between commits {pace.bucket:.1f} s, "
          f"commit {report.commit_ms:.0f} ms; now {kills} kills", flush=True)
    rng, t0, number = random.Random(seed), time.time(), 0
    run = work / f"killed-p{P}"
    identical = True
    while True:
        cmd = train_cmd(args.bigembed, data, run, epochs, dim, [])
        finished = kill_once(cmd, run, shape, kills - report.kills, pace, rng, report)
        if finished:
            report.runs += 1
            final = committed_position(run)
            report.final_version = None if final is None else final[0]
            if final is None or final[1:] != (epochs, 0, 0):
                report.failures.append(f"{run.name}: training did not finish: CURRENT {final}")
            same, why = compare_runs(args.bigembed, ref, run, work)
            identical &= same
            report.identical_runs += same
            if not same:
                report.failures.append(f"{run.name}: final embeddings differ from the uninterrupted run: {why}")
            print(f"  {run.name} finished after {report.kills} kills in all; comparison: {why}", flush=True)
            missing = [e for e in range(1, epochs + 1) if report.per_epoch[e] == 0]
            if report.kills >= kills and not missing:
                break
            number += 1
            run = work / f"killed-p{P}-{number}"  # more kills needed: a fresh RUN from scratch
            print(f"  {report.kills}/{kills} kills, no kill yet in epoch(s) {missing}: a fresh RUN {run.name}",
                  flush=True)
            continue
        if report.kills % 10 == 0:
            pos = committed_position(run)
            print(f"  {report.kills} kills, CURRENT {pos}, {time.time() - t0:.0f} s, "
                  f"{len(report.failures)} failures", flush=True)
        if len(report.failures) > 20:
            report.failures.append("stopped after 20 failures")
            break
    report.loop_s = time.time() - t0
    report.identical = identical and report.identical_runs == report.runs and report.runs > 0
    if report.stale:
        report.failures.append(f"check 1: after {report.stale} kill(s) a version (a folder with manifest.json) "
                               f"beyond the {KEEP} kept ones did not verify, e.g. {report.stale_example}")
    report.missing = [e for e in range(1, epochs + 1) if report.per_epoch[e] == 0]
    if report.missing or report.kills < kills:
        report.failures.append(f"{report.kills}/{kills} kills, none in epoch(s) {report.missing}")
    if report.slabs > 1 and not (report.in_bucket and report.commits_in_bucket):
        report.failures.append(f"{report.slabs} slabs a bucket, yet {report.in_bucket} kills and "
                               f"{report.commits_in_bucket} commits inside a bucket")
    print(f"  done: {report.kills} kills in {report.loop_s:.0f} s, {report.runs} RUN(s) trained to the end, "
          f"{report.identical_runs} bit-identical", flush=True)
    return report


# ---------------------------------------------------------------- part B: damage matrix

@dataclass
class Ctx:
    """What a damage function may use: the RUN to damage, its CURRENT manifest, a case folder."""

    run: Path
    current: int
    manifest: dict[str, Any]
    folder: Path
    rng: random.Random
    partitions: int

    def shard(self, key: str = "emb/node/0") -> Path:
        return self.run / self.manifest["shards"][key]["path"]

    def chunk(self) -> Path:
        return next(p for p in sorted((self.shard() / "c").rglob("*")) if p.is_file())

    def manifest_path(self) -> Path:
        return self.run / "checkpoints" / f"v{self.current}" / "manifest.json"

    def rewrite_manifest(self, change: Callable[[dict[str, Any]], None]) -> None:
        raw = json.loads(self.manifest_path().read_text())
        change(raw)
        self.manifest_path().write_text(json.dumps(raw, indent=2))

    def outside_copy(self, where: Path) -> Path:
        """A valid copy of CURRENT's emb/node/0 shard outside the RUN (so only a path check refuses it)."""
        target = where / self.shard().name
        shutil.rmtree(where, ignore_errors=True)
        where.mkdir(parents=True)
        shutil.copytree(self.shard(), target)
        return target


def _flip(ctx: Ctx) -> None:
    chunk = ctx.chunk()
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0xFF
    chunk.write_bytes(bytes(data))


def _truncate(ctx: Ctx) -> None:
    chunk = ctx.chunk()
    chunk.write_bytes(chunk.read_bytes()[: chunk.stat().st_size // 2])


def _current(data: bytes) -> Callable[[Ctx], None]:
    return lambda ctx: (ctx.run / "CURRENT").write_bytes(data)


def _current_dir(ctx: Ctx) -> None:
    (ctx.run / "CURRENT").unlink()
    (ctx.run / "CURRENT").mkdir()


def _current_collected(ctx: Ctx) -> None:
    present = set(version_folders(ctx.run))
    gone = min(v for v in range(ctx.current) if v not in present)
    (ctx.run / "CURRENT").write_text(f"v{gone}\n")


def _position(epoch: int | None, bucket: int | None) -> Callable[[Ctx], None]:
    def change(raw: dict[str, Any], ctx: Ctx) -> None:
        if epoch is not None:
            raw["position"]["epoch"] = epoch
        if bucket is not None:
            raw["position"]["bucket"] = bucket if bucket >= 0 else ctx.partitions ** 2 + 1
    return lambda ctx: ctx.rewrite_manifest(lambda raw: change(raw, ctx))


def _path_dotdot(ctx: Ctx) -> None:
    copy = ctx.outside_copy(ctx.folder.parent / f"escaped-{ctx.folder.name}")
    rel = os.path.relpath(copy, ctx.run)  # ../../escaped-CASE/emb_node_0.zarr
    ctx.rewrite_manifest(lambda raw: raw["shards"]["emb/node/0"].__setitem__("path", rel))


def _path_absolute(ctx: Ctx) -> None:
    copy = ctx.outside_copy(ctx.folder / "outside")
    ctx.rewrite_manifest(lambda raw: raw["shards"]["emb/node/0"].__setitem__("path", str(copy.resolve())))


LEFTOVER_MARK = "STAGED-BY-TORTURE"


def _staged_leftover(ctx: Ctx) -> None:
    """What a kill during staging leaves: a folder v(N+1) past every version, without a manifest,
    holding a half-written shard (and a marker file that no commit writes)."""
    folder = ctx.run / "checkpoints" / f"v{max(version_folders(ctx.run)) + 1}"
    folder.mkdir()
    shutil.copytree(ctx.shard(), folder / ctx.shard().name)
    chunk = next(p for p in sorted((folder / ctx.shard().name / "c").rglob("*")) if p.is_file())
    chunk.write_bytes(chunk.read_bytes()[: chunk.stat().st_size // 3])
    (folder / LEFTOVER_MARK).write_text("left by a kill during staging\n")


def _retired_folder(ctx: Ctx) -> None:
    """What garbage collection leaves after a resume: CURRENT (vN) references partition 1's
    shards in v(N-1)'s folder, whose manifest was retired (``manifest.retired.json``: it is no
    version any more), and v(N-2) was collected."""
    cur, prev = ctx.current, ctx.current - 1
    older = read_manifest_raw(ctx.run, prev)
    assert isinstance(older, dict)
    for key in list(ctx.manifest["shards"]):
        if key.endswith("/1"):
            shutil.rmtree(ctx.shard(key))
            ctx.manifest["shards"][key] = older["shards"][key]
    ctx.manifest_path().write_text(json.dumps(ctx.manifest, indent=2))
    (ctx.run / "checkpoints" / f"v{prev}" / "manifest.json").rename(ctx.run / "checkpoints" / f"v{prev}" / RETIRED)
    for v in version_folders(ctx.run):
        if v < prev:
            shutil.rmtree(ctx.run / "checkpoints" / f"v{v}")
    assert version_problem(ctx.run, cur, ctx.partitions ** 2) is None


DAMAGES: dict[str, tuple[str, Callable[[Ctx], None]]] = {
    "shard-flip-byte": ("flipped byte in a chunk of CURRENT's emb shard", _flip),
    "shard-truncate": ("chunk file of CURRENT's emb shard cut in half", _truncate),
    "shard-delete": ("CURRENT's emb shard folder deleted", lambda ctx: shutil.rmtree(ctx.shard())),
    "manifest-garbage": ("CURRENT's manifest: random bytes",
                         lambda ctx: ctx.manifest_path().write_bytes(ctx.rng.randbytes(300))),
    "manifest-empty": ("CURRENT's manifest: empty", lambda ctx: ctx.manifest_path().write_bytes(b"")),
    "manifest-missing": ("CURRENT's manifest deleted", lambda ctx: ctx.manifest_path().unlink()),
    "current-garbage": ("CURRENT: garbage text", _current(b"hello, not a version\n")),
    "current-empty": ("CURRENT: empty", _current(b"")),
    "current-missing": ("CURRENT deleted", lambda ctx: (ctx.run / "CURRENT").unlink()),
    "current-bad-utf8": ("CURRENT: invalid UTF-8", _current(b"\xff\xfev\xc3\x28\n")),
    "current-dir": ("CURRENT is a directory", _current_dir),
    "current-collected": ("CURRENT names a collected version", _current_collected),
    "position-negative": ("manifest position epoch -1", _position(-1, None)),
    "position-bucket": ("manifest position bucket P*P+1", _position(None, -1)),
    "shard-path-dotdot": ("shard path ../../elsewhere (valid copy there)", _path_dotdot),
    "shard-path-absolute": ("shard path absolute (valid copy there)", _path_absolute),
    "staged-leftover": ("a folder v(N+1) past CURRENT without a manifest, a half-written shard in it (a kill "
                        "during staging)", _staged_leftover),
    "retired-folder": ("CURRENT references shards in v(N-1), whose manifest is retired "
                       "(manifest.retired.json); v(N-2) collected", _retired_folder),
}
QUIET = {"staged-leftover", "retired-folder"}  # nothing is damaged: resume from CURRENT, no warning needed


def extra_checks(name: str, args: argparse.Namespace, run: Path, data: Path, damaged: Path, P: int,
                 when: str) -> list[str]:
    """Problems found by the case's own checks (``when``: "eval" after eval ran, "train" after train)."""
    problems = []
    if name == "staged-leftover" and when == "train":
        leftover = max(version_folders(damaged))
        if (run / "checkpoints" / f"v{leftover}" / LEFTOVER_MARK).exists():
            problems.append(f"v{leftover} (staged, no manifest) was not removed by train")
    if name == "retired-folder":
        retired = retired_folders(damaged)
        for v in retired:
            if not (run / "checkpoints" / f"v{v}").is_dir() and any(
                    str(e.get("path", "")).startswith(f"checkpoints/v{v}/")
                    for k in version_folders(run) if isinstance(raw := read_manifest_raw(run, k), dict)
                    for e in raw.get("shards", {}).values()):
                problems.append(f"retired v{v} deleted after {when} while a version references its shards")
        if when == "eval":
            for v in retired:
                done = run_cli([args.bigembed, "eval", str(run), str(data), "--version", f"v{v}", "--no-progress"])
                lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
                if done.returncode != 1 or len(lines) != 1 or not lines[0].startswith("error:"):
                    problems.append(f"eval --version v{v} (retired): exit {done.returncode}, "
                                    f"{(lines[-1] if lines else '')[:90]}")
                elif re.search(rf"\bv{v}\b", lines[0].split("committed versions", 1)[-1]):
                    problems.append(f"eval's error offers retired v{v}: {lines[0][:160]}")
    if name in QUIET and when == "train":  # every folder with manifest.json (a version) verifies
        problems += [f"after train: {problem}" for _, problem in chain_problems(run, P * P)]
    return problems


@dataclass
class CaseResult:
    case: str
    train: str
    eval: str
    expected: str
    ok_train: bool
    ok_eval: bool
    repro: str


def judge_train(done: subprocess.CompletedProcess[str], newest: int | None, lost: list[int],
                quiet: bool = False) -> tuple[bool, str]:
    out = done.stderr + done.stdout
    warnings = re.findall(r"^warning:.*$", out, re.M)
    errors = re.findall(r"^error:.*$", done.stderr, re.M)
    if "Traceback" in out:
        last = [line for line in out.strip().splitlines() if line.strip()][-1:]
        return False, f"traceback, exit {done.returncode}: {last[0][:90] if last else ''}"
    if lost:
        return False, f"exit {done.returncode}, deleted verified {', '.join(f'v{v}' for v in lost)}"
    if done.returncode == 0:
        m = RESUMING.search(out)
        if m is None:
            return False, "exit 0 without resuming (started over?)"
        got = int(m.group(1))
        if got != newest:
            return False, f"resumed v{got}, newest verified v{newest}" + (" (no warning)" if not warnings else "")
        if quiet:
            return True, f"resumed v{got}" + (f"; {warnings[0][:110]}" if warnings else " (no warning)")
        if not warnings:
            return False, f"resumed v{got} silently (no warning)"
        return True, f"resumed v{got}; {warnings[0][:110]}"
    lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
    if done.returncode == 1 and len(errors) == 1 and lines and lines[-1].startswith("error:"):
        return True, f"exit 1: {errors[0][:110]}"
    return False, f"exit {done.returncode}: {(lines[-1] if lines else '')[:90]}"


def judge_eval(done: subprocess.CompletedProcess[str], intact: list[int], lost: list[int]) -> tuple[bool, str]:
    out = done.stderr + done.stdout
    lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
    if "Traceback" in out:
        return False, f"traceback, exit {done.returncode}: {(lines[-1] if lines else '')[:90]}"
    if lost:
        return False, f"deleted verified {lost}"
    if done.returncode == 0:
        m = re.search(r"edges, v(\d+) \(", done.stdout)
        mrr = re.search(r"both\s+MRR ([0-9.]+)", done.stdout)
        got = int(m.group(1)) if m else None
        score = mrr.group(1) if mrr else "?"
        if got in intact:
            return True, f"ranked v{got} (MRR {score})"
        return False, f"MRR {score} from v{got}, which does not verify"
    if done.returncode == 1 and len(lines) == 1 and lines[0].startswith("error:"):
        return True, f"exit 1: {lines[0][:110]}"
    return False, f"exit {done.returncode}: {(lines[-1] if lines else '')[:90]}"


def run_case(args: argparse.Namespace, name: str, base: Path, data: Path, epochs: int, P: int,
             work: Path) -> CaseResult:
    folder = work / name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    damaged, run = folder / "damaged", folder / "run"
    shutil.copytree(base, damaged)
    current = current_version(damaged)
    assert current is not None
    raw = read_manifest_raw(damaged, current)
    assert isinstance(raw, dict)
    DAMAGES[name][1](Ctx(damaged, current, raw, folder, random.Random(f"{args.seed}-{name}"), P))
    shutil.copytree(damaged, run, symlinks=True)
    buckets = P * P
    intact = intact_versions(run, buckets)
    newest = max(intact) if intact else None
    evaluate = [args.bigembed, "eval", str(run), str(data), "--no-progress"]
    train = [args.bigembed, "train", str(data), "-o", str(run), "--epochs", str(epochs + 1), "--dim", str(args.dim),
             "--deterministic", "--set", "checkpoint.interval_seconds=0", "--set", "checkpoint.keep_versions=50",
             "--no-progress"]
    done_eval = run_cli(evaluate)
    lost_eval = [v for v in intact if v not in version_folders(run)]
    extra_eval = extra_checks(name, args, run, data, damaged, P, "eval")
    done_train = run_cli(train)
    lost = [v for v in intact if v not in version_folders(run)]
    extra_train = extra_checks(name, args, run, data, damaged, P, "train")
    for done in (done_eval, done_train):
        done.stdout, done.stderr = (t.replace(str(run), "RUN") for t in (done.stdout, done.stderr))
    quiet = name in QUIET
    ok_t, train_text = judge_train(done_train, newest, lost, quiet)
    ok_e, eval_text = judge_eval(done_eval, intact, lost_eval)
    if extra_train:
        ok_t, train_text = False, f"{train_text}; {'; '.join(extra_train)}"
    if extra_eval:
        ok_e, eval_text = False, f"{eval_text}; {'; '.join(extra_eval)}"
    expected = (f"train: resume v{newest} + warning, or error; eval: {intact} or error" if not quiet else
                f"train: resume v{newest}; eval: {intact}; " + (
                    "staged folder removed" if name == "staged-leftover" else
                    "retired folder kept while referenced, refused by eval --version, not listed"))
    repro = (f"rm -rf {run} && cp -r {damaged} {run} && {' '.join(evaluate)}; {' '.join(train)}")
    return CaseResult(name, train_text, eval_text, expected, ok_t, ok_e, repro)


def damage_matrix(args: argparse.Namespace, work: Path) -> list[CaseResult]:
    P, epochs = 2, 2
    graph, data, base = work / "graph", work / "data", work / "base"
    print("\n== damage matrix: base run (keep_versions=3) ...", flush=True)
    must([args.bigembed, "generate", "-o", str(graph), "--nodes", "2000", "--edges", "20000", "--seed",
          str(args.seed), "--no-progress"])
    must([args.bigembed, "import", str(graph / "train.tsv"), "--split", f"test={graph / 'test.tsv'}",
          "-o", str(data), "-p", str(P), "--no-progress"])
    must([args.bigembed, "train", str(data), "-o", str(base), "--epochs", str(epochs), "--dim", str(args.dim),
          "--deterministic", "--set", "checkpoint.interval_seconds=0", "--set", "checkpoint.keep_versions=3",
          "--no-progress"])
    kept = intact_versions(base, P * P)
    if len(kept) < 3 or kept != version_folders(base):
        sys.exit(f"torture: base run should keep >= 3 verified versions, has {version_folders(base)} "
                 f"(verified {kept})")
    with ThreadPoolExecutor(args.jobs) as pool:  # each case is two subprocesses
        results = list(pool.map(lambda name: run_case(args, name, base, data, epochs, P, work),
                                args.case or list(DAMAGES)))
    for result in results:
        mark = "pass" if result.ok_train and result.ok_eval else "FAIL"
        print(f"  {result.case}: {mark}: train {result.train}; eval {result.eval}", flush=True)
    return results


# ---------------------------------------------------------------- reporting and main

def print_kill_table(reports: list[KillReport]) -> None:
    print("\n## Kill loop\n")
    for r in reports:
        print(f"-p {r.partitions}: {r.graph}")
    print("\n| -p | kills | clean resumes | fresh starts | versions lost | kills in commit | "
          "kills inside a bucket (after a slab commit of it) | commits inside a bucket | phases | "
          "kills per epoch | stale ancestor manifests | retired folders (most at once) | RUNs finished | "
          "bit-identical | reference s | loop s | failures |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---:|---:|---:|---|---:|---:|---:|")
    for r in reports:
        phases = ", ".join(f"{k} {v}" for k, v in sorted(r.phases.items()))
        epochs = " ".join(f"{e}:{n}" for e, n in sorted(r.per_epoch.items()))
        epochs += f" (none in {r.missing})" if r.missing else ""
        print(f"| {r.partitions} | {r.kills} | {r.clean_resumes}/{r.resumes} | {r.fresh_starts} | "
              f"{r.versions_lost} | {r.in_commit} | {r.in_bucket} ({r.slab_moves}) | {r.commits_in_bucket} | "
              f"{phases} | {epochs} | {r.stale} | {r.retired_seen} | {r.runs} | "
              f"{'yes' if r.identical else 'NO'} ({r.identical_runs}/{r.runs}) | {r.reference_s:.1f} | "
              f"{r.loop_s:.0f} | {len(r.failures)} |")
    for r in reports:
        for failure in r.failures[:10]:
            print(f"  -p {r.partitions} failure: {failure}")


def print_damage_table(results: list[CaseResult]) -> None:
    print("\n## Damage matrix\n")
    print("| case | description | train outcome | eval outcome | expected | pass/fail |")
    print("|---|---|---|---|---|---|")
    for r in results:
        mark = "pass" if r.ok_train and r.ok_eval else "FAIL (" + ", ".join(
            w for w, ok in (("train", r.ok_train), ("eval", r.ok_eval)) if not ok) + ")"
        print(f"| {r.case} | {DAMAGES[r.case][0]} | {r.train} | {r.eval} | {r.expected} | {mark} |")
    failed = [r for r in results if not (r.ok_train and r.ok_eval)]
    if failed:
        print("\nReproduce a failing case:")
        for r in failed:
            print(f"  {r.case}: {r.repro}")


def prepare_workdir(path: Path) -> Path:
    if path.exists() and any(path.iterdir()):
        if not (path / MARKER).exists():
            sys.exit(f"torture: {path} exists and was not made by this script; pass another --workdir")
        shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / MARKER).write_text("scratch folder of benchmarks/torture.py\n")
    return path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", type=int, default=5000)
    ap.add_argument("--edges", type=int, default=200_000)
    ap.add_argument("--epochs", type=int, default=8, help="epochs of the kill-loop run")
    ap.add_argument("--dim", type=int, default=100)
    ap.add_argument("--partitions", default="2,1", help="partition counts of the kill loops, comma-separated")
    ap.add_argument("--kills", default="100,30", help="kills per kill loop (the last count repeats)")
    ap.add_argument("--slab-nodes", type=int, default=20_000, help="nodes of the -p 1 kill loop's graph")
    ap.add_argument("--slab-edges", type=int, default=2_500_000,
                    help="edges of the -p 1 kill loop's graph (90%% train: 3 slabs of 1M); 0: the common graph")
    ap.add_argument("--slab-epochs", type=int, default=3, help="epochs of the -p 1 kill loop")
    ap.add_argument("--slab-dim", type=int, default=16, help="dim of the -p 1 kill loop")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: 2000 nodes, 40000 edges, 2 epochs, 12,6 kills, -p 1 graph of 2.2M edges, 2 epochs")
    ap.add_argument("--skip-kill", action="store_true", help="no kill loop")
    ap.add_argument("--skip-damage", action="store_true", help="no damage matrix")
    ap.add_argument("--case", action="append", choices=list(DAMAGES), help="only this damage case (repeatable)")
    ap.add_argument("--jobs", type=int, default=2, help="damage cases run side by side")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/bigembed-torture"))
    ap.add_argument("--bigembed", default=str(Path(sys.executable).with_name("bigembed")))
    args = ap.parse_args(argv)
    if args.quick:
        args.nodes, args.edges, args.epochs, args.kills = 2000, 40_000, 2, "12,6"
        args.slab_edges, args.slab_epochs = 2_250_000, 2
    if not Path(args.bigembed).exists():
        args.bigembed = shutil.which("bigembed") or args.bigembed
    return args


def code_state() -> str:
    """The commit of the checkout under test, and whether bigembed/ has uncommitted edits."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = run_cli(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], 30).stdout.strip()
        dirty = run_cli(["git", "-C", str(root), "status", "--porcelain", "bigembed"], 30).stdout.split("\n")
    except OSError:
        return "unknown (no git)"
    edits = [line for line in dirty if line.strip()]
    return f"{head}" + (f" + uncommitted edits to {len(edits)} file(s) under bigembed/" if edits else "")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    work, started, code = prepare_workdir(args.workdir), time.time(), code_state()
    print(f"code under test: {code}", flush=True)
    reports: list[KillReport] = []
    if not args.skip_kill:
        parts = [int(p) for p in args.partitions.split(",")]
        kills = [int(k) for k in args.kills.split(",")]
        for i, P in enumerate(parts):
            slab = P == 1 and args.slab_edges > 0  # -p 1: a bucket of several slabs
            graph = work / ("graph-slabs" if slab else "graph")
            if not graph.exists():
                nodes, edges = (args.slab_nodes, args.slab_edges) if slab else (args.nodes, args.edges)
                must([args.bigembed, "generate", "-o", str(graph), "--nodes", str(nodes), "--edges", str(edges),
                      "--seed", str(args.seed), "--no-progress"])
            epochs, dim = (args.slab_epochs, args.slab_dim) if slab else (args.epochs, args.dim)
            reports.append(kill_loop(args, work, graph, P, kills[min(i, len(kills) - 1)], args.seed + i,
                                     epochs, dim))
    results = [] if args.skip_damage else damage_matrix(args, work / "damage")
    if reports:
        print_kill_table(reports)
    if results:
        print_damage_table(results)
    failed = sum(len(r.failures) for r in reports) + sum(not (r.ok_train and r.ok_eval) for r in results)
    summary = {"kill_loops": [{**{k: v for k, v in vars(r).items() if k not in ("phases", "per_epoch")},
                               "phases": dict(r.phases), "per_epoch": dict(r.per_epoch)} for r in reports],
               "damage": [vars(r) for r in results], "seconds": round(time.time() - started, 1), "failed": failed,
               "code": code}
    (work / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    print(f"\n{'all checks passed' if not failed else f'{failed} check(s) failed'} "
          f"in {time.time() - started:.0f} s on {code}; details in {work}/summary.json")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
