"""What the benchmark scripts share: how to call bigembed and measure a child process."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bigembed.config import PBG_STYLE

BIGEMBED = [sys.executable, "-m", "bigembed.cli.main"]

# bigembed's defaults before issue 18 (config.PBG_STYLE): the memory and billion-edge figures
# recorded before then were measured with them, and are rerun with them so that rows compare.
PBG_STYLE_SETS = [arg for key, value in PBG_STYLE.items()
                  for arg in ("--set", f"{key}={str(value).lower() if isinstance(value, bool) else value}")]


def run_measured(cmd: list[str]) -> tuple[float, float]:
    """Run ``cmd`` to completion; return (wall seconds, its peak RSS in MiB).

    The peak comes from GNU time run as the child: Linux carries a process's
    high-water RSS across fork and exec, so ``wait4`` on a child forked from a big
    benchmark process reports at least that process's RSS. ``/usr/bin/time`` is
    small, and it forks the command itself. Without it, ``wait4`` is used.
    """
    start = time.perf_counter()
    if shutil.which("/usr/bin/time"):
        with tempfile.NamedTemporaryFile("r", suffix=".rss") as out:
            proc = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", out.name, *cmd])
            if proc.returncode != 0:
                raise SystemExit(f"failed: {' '.join(cmd)}")
            kib = int(out.read().strip().splitlines()[-1])
        return time.perf_counter() - start, kib / 1024
    proc2 = subprocess.Popen(cmd)
    _, status, usage = os.wait4(proc2.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}")
    return time.perf_counter() - start, usage.ru_maxrss / 1024


def epoch_seconds(stats: Path) -> list[float]:
    """Wall time of each epoch from a RUN's stats.jsonl: end of its last bucket minus end of
    the previous epoch's (the first epoch from its first bucket's start)."""
    ends: dict[int, float] = {}
    first_start = None
    for line in stats.read_text().splitlines():
        r = json.loads(line)
        if "epoch" in r and "time" in r and "edges" in r:
            ends[r["epoch"]] = r["time"]
            if first_start is None:
                first_start = r["time"] - r["seconds"]
    out, prev = [], first_start
    for e in sorted(ends):
        out.append(ends[e] - prev)
        prev = ends[e]
    return out


def io_wait_seconds(stats: Path, epoch: int) -> float:
    """Seconds an epoch's buckets waited for their partitions (``io_wait_s`` in stats.jsonl)."""
    total = 0.0
    for line in stats.read_text().splitlines():
        r = json.loads(line)
        if r.get("epoch") == epoch and "io_wait_s" in r:
            total += r["io_wait_s"]
    return total


def training_seconds(stats: Path, epoch: int) -> float:
    """Seconds an epoch spent training its buckets and waiting for their partitions: its wall
    time without the checkpoint commits (``seconds`` + ``io_wait_s`` in stats.jsonl)."""
    total = 0.0
    for line in stats.read_text().splitlines():
        r = json.loads(line)
        if r.get("epoch") == epoch and "seconds" in r:
            total += r["seconds"] + r.get("io_wait_s", 0.0)
    return total
