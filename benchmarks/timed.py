"""Run one whole command (or a shell pipeline) and record its wall time and peak RSS, failures included.

Unlike :func:`measure.run_measured`, a failing or timed-out command is recorded (exit code
and its last error line) instead of stopping the benchmark, so a scale curve can say
honestly where it broke. The peak RSS is GNU time's ``%M`` for the child: the largest
single process of the tree (for a pipeline run by bash, the largest of its members).
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass
class Timed:
    cmd: str
    rc: int
    wall_s: float
    rss_mib: float | None
    error: str = ""  # last non-empty stderr line when rc != 0 ("timeout after N s" when killed)

    @property
    def ok(self) -> bool:
        return self.rc == 0

    def as_dict(self) -> dict:
        return asdict(self)


def run_timed(cmd: list[str] | str, log: Path | None = None, timeout: float | None = None,
              env: dict[str, str] | None = None, cwd: Path | None = None) -> Timed:
    """``cmd`` (a list, or a string run by ``bash -o pipefail -c``) to completion or ``timeout``.

    Its stdout and stderr are appended to ``log`` (or discarded, keeping the stderr tail).
    """
    shown = cmd if isinstance(cmd, str) else shlex.join(cmd)
    argv = ["bash", "-o", "pipefail", "-c", cmd] if isinstance(cmd, str) else list(cmd)
    with tempfile.NamedTemporaryFile("r", suffix=".rss") as rss, \
            tempfile.NamedTemporaryFile("w+", suffix=".err") as err:
        out = open(log, "a") if log else open(os.devnull, "w")
        with out:
            if log:
                out.write(f"\n$ {shown}\n")
                out.flush()
            start = time.perf_counter()
            proc = subprocess.Popen(["/usr/bin/time", "-f", "%M", "-o", rss.name, *argv], stdout=out,
                                    stderr=err, start_new_session=True, env=env, cwd=cwd)
            try:
                rc = proc.wait(timeout=timeout)
                timed_out = False
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)  # the session this command started, nothing else
                rc = proc.wait()
                timed_out = True
            wall = time.perf_counter() - start
            err.seek(0)
            text = err.read()
            if log:
                out.write(text)
        lines = [ln for ln in rss.read().splitlines() if ln.strip()]
        try:
            rss_mib = int(lines[-1]) / 1024 if lines else None
        except ValueError:
            rss_mib = None
    error = ""
    if timed_out:
        error = f"timeout after {timeout:.0f} s"
    elif rc != 0:
        tail = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("Command exited")]
        error = tail[-1].strip() if tail else f"exit {rc}"
    return Timed(shown, rc, wall, rss_mib, error)


def du_bytes(path: Path) -> int:
    """Disk use of the files under ``path`` (allocated blocks, as ``du``; 0 if missing)."""
    if not path.exists():
        return 0
    if path.is_file():
        return path.stat().st_blocks * 512
    return sum(f.stat().st_blocks * 512 for f in path.rglob("*") if f.is_file())
