"""What the benchmark scripts share: how to call bigembed and measure a child process."""

from __future__ import annotations

import os
import subprocess
import sys
import time

BIGEMBED = [sys.executable, "-m", "bigembed.cli.main"]


def run_measured(cmd: list[str]) -> tuple[float, float]:
    """Run ``cmd`` to completion; return (wall seconds, its peak RSS in MiB, via wait4)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd)
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}")
    return time.perf_counter() - start, usage.ru_maxrss / 1024
