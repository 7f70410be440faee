"""CPU time of training when the cores are shared: does bigembed spin or oversubscribe?

Trains one epoch of a DATA (all negatives by default, which runs one worker with every core
as torch's intra-op threads; ``--sampled`` for the Hogwild workers instead) and reports its
wall time and the CPU seconds it used (user + system, from ``wait4``), alone and with another
process busy beside it (``--busy N`` threads of a plain spinning loop, started before and
stopped after). Each setting is run ``--rounds`` times, alternating, and the environment
variables to compare are given as ``--env NAME=VALUE`` (a side with them and one without).

    python benchmarks/contention.py DATA --busy 2 --rounds 2 --env OMP_WAIT_POLICY=PASSIVE

A trainer whose threads spin at their barriers uses far more CPU seconds when the cores are
shared than when they are not; one that sleeps uses about the same.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from measure import BIGEMBED

HERE = Path(__file__).resolve().parent


def _spin(stop: Any) -> None:
    x = 0
    while not stop.is_set():
        for _ in range(100_000):
            x += 1


def one(data: Path, work: Path, extra_env: dict[str, str], busy: int, sets: list[str]) -> dict[str, float]:
    run = work / "run"
    shutil.rmtree(run, ignore_errors=True)
    stop = multiprocessing.Event()
    spinners = [multiprocessing.Process(target=_spin, args=(stop,), daemon=True) for _ in range(busy)]
    for p in spinners:
        p.start()
    env = {**os.environ, **extra_env}
    start = time.perf_counter()
    proc = subprocess.Popen([*BIGEMBED, "train", str(data), "-o", str(run), "--epochs", "1", "--no-progress",
                             *sets], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    stop.set()
    for p in spinners:
        p.join()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"training failed: {proc.stderr.read() if proc.stderr else ''}")
    return {"wall_s": round(wall, 2), "cpu_s": round(usage.ru_utime + usage.ru_stime, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", type=Path)
    ap.add_argument("--busy", type=int, default=os.cpu_count() or 2, help="spinning threads beside training")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--env", action="append", default=[], help="NAME=VALUE for the second side")
    ap.add_argument("--sampled", action="store_true", help="sampled negatives (Hogwild workers)")
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--work", type=Path, default=HERE / "work" / "contention")
    ap.add_argument("--out", type=Path, default=HERE / "work" / "contention.json")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    sets = ["--dim", str(args.dim)] + ([] if args.sampled else ["--set", "training.all_negatives=true"])
    sides = {"as is": {}, " ".join(args.env) or "as is (again)": dict(e.split("=", 1) for e in args.env)}
    rows: dict[str, list[dict[str, float]]] = {}
    for r in range(args.rounds):
        for busy in (0, args.busy):
            names = list(sides) if r % 2 == 0 else list(sides)[::-1]
            for name in names:
                key = f"{name}, {'alone' if busy == 0 else f'{busy} busy threads beside'}"
                got = one(args.data, args.work, sides[name], busy, sets)
                rows.setdefault(key, []).append(got)
                print(f"round {r + 1}: {key}: wall {got['wall_s']} s, CPU {got['cpu_s']} s", flush=True)
    print("\n| setting | wall s (median, min-max) | CPU s (median, min-max) |\n|---|---|---|")
    for key, runs in rows.items():
        walls, cpus = [x["wall_s"] for x in runs], [x["cpu_s"] for x in runs]
        print(f"| {key} | {statistics.median(walls):.1f} ({min(walls):.1f}-{max(walls):.1f}) | "
              f"{statistics.median(cpus):.1f} ({min(cpus):.1f}-{max(cpus):.1f}) |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
