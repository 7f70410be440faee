"""`generate` speed: the generator of an earlier commit against this one, same spec, alternating.

Each run is a fresh Python process that loads one ``generator.py`` by path and writes the
graph (train.tsv, valid.tsv, test.tsv) either to files or with train.tsv a named pipe that
``cat > /dev/null`` drains; the process times its own ``write_graph`` (no interpreter start).
Runs alternate (before, after, before, ...) so a slow spell of the machine hits both sides;
each figure is the median edges/s of ``--rounds`` runs with the range beside it. The last
row is the real command, ``bigembed generate -o - ... | cat > /dev/null`` (this tree only,
whole process timed, so it includes the interpreter's start). The CPU column is the CPU time of all
the writing process's threads an edge: on a machine busy with other jobs it shows what the wall
time cannot (2 free cores give at most 2 CPU-seconds a second).

``--check`` first compares the two graphs' degree tails (share of the endpoints held by
the top 1% of nodes) on a smaller spec, so a faster generator that lost its hubs shows up.

Usage (``before`` is a checkout of the older commit, e.g. made with ``git worktree add``)::

    git worktree add /tmp/gen_before be1bfbe
    python benchmarks/generate_speed.py --before /tmp/gen_before [--nodes 1000000 --edges 20000000 --rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent

DRIVER = r"""
import importlib.util, json, sys, time
path, out, spec_json = sys.argv[1:4]
loaded = importlib.util.spec_from_file_location("generator_under_test", path)
gen = importlib.util.module_from_spec(loaded)
sys.modules["generator_under_test"] = gen
loaded.loader.exec_module(gen)
spec = gen.GraphSpec(**json.loads(spec_json))
t, cpu = time.perf_counter(), time.process_time()
gen.write_graph(spec, out)
print(time.perf_counter() - t, time.process_time() - cpu)
"""

CHECK = r"""
import importlib.util, json, sys
import numpy as np
path, spec_json = sys.argv[1:3]
loaded = importlib.util.spec_from_file_location("generator_under_test", path)
gen = importlib.util.module_from_spec(loaded)
sys.modules["generator_under_test"] = gen
loaded.loader.exec_module(gen)
spec = gen.GraphSpec(**json.loads(spec_json))
lhs, rel, rhs = (np.concatenate(x) for x in zip(*gen.generate_edges(spec)))
def top(ids):
    d = np.sort(np.bincount(ids, minlength=spec.nodes))[::-1]
    return float(d[: spec.nodes // 100].sum() / d.sum())
print(json.dumps({"endpoints": top(np.concatenate([lhs, rhs])), "lhs": top(lhs), "rhs": top(rhs),
                  "max_degree": int(np.bincount(np.concatenate([lhs, rhs])).max())}))
"""


def timed_write(generator: Path, spec: dict, work: Path, pipe: bool) -> tuple[float, float]:
    """Seconds ``write_graph`` took in a fresh process, and the CPU seconds of all its threads."""
    out = Path(tempfile.mkdtemp(dir=work))
    drain = None
    if pipe:
        os.mkfifo(out / "train.tsv")
        drain = subprocess.Popen(f"cat '{out / 'train.tsv'}' > /dev/null", shell=True)
    try:
        run = subprocess.run([sys.executable, "-c", DRIVER, str(generator), str(out), json.dumps(spec)],
                             check=True, capture_output=True, text=True, cwd=HERE)
        wall, cpu = run.stdout.split()[-2:]
        return float(wall), float(cpu)
    finally:
        if drain is not None:
            drain.wait()
        for f in out.iterdir():
            f.unlink()
        out.rmdir()


def timed_command(spec: dict) -> float:
    """Seconds of a whole ``bigembed generate -o - | cat > /dev/null``."""
    args = ["--nodes", spec["nodes"], "--edges", spec["edges"], "--seed", spec["seed"],
            "--ids", "int" if spec["int_ids"] else "string", "--no-progress"]
    cmd = " ".join([sys.executable, "-m", "bigembed.cli.main", "generate", "-o", "-", *map(str, args)])
    t = time.perf_counter()
    subprocess.run(f"set -o pipefail; {cmd} | cat > /dev/null", shell=True, check=True, cwd=HERE,
                   executable="/bin/bash", stderr=subprocess.DEVNULL)  # its one-line report
    return time.perf_counter() - t


def spread(values: list[float]) -> str:
    return f"{statistics.median(values) / 1e6:.2f}M ({min(values) / 1e6:.2f}-{max(values) / 1e6:.2f}M)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", type=Path, required=True, help="checkout of the earlier bigembed")
    ap.add_argument("--nodes", type=int, default=1_000_000)
    ap.add_argument("--edges", type=int, default=20_000_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--ids", nargs="+", default=["string", "int"], choices=["string", "int"])
    ap.add_argument("--outputs", nargs="+", default=["file", "pipe"], choices=["file", "pipe"])
    ap.add_argument("--check", action="store_true", help="also compare the degree tails (1M nodes, 5M edges)")
    ap.add_argument("--work", type=Path, default=None, help="folder for the graphs (default: a temporary one)")
    args = ap.parse_args()
    sides = {"before": args.before / "bigembed" / "generator.py", "after": HERE / "bigembed" / "generator.py"}
    for side, path in sides.items():
        if not path.is_file():
            raise SystemExit(f"{side}: no {path}")
    print(f"cores {os.cpu_count()}, load average {os.getloadavg()[0]:.2f} at start", flush=True)

    if args.check:
        spec = {"nodes": 1_000_000, "edges": 5_000_000, "seed": 0}
        for side, path in sides.items():
            out = subprocess.run([sys.executable, "-c", CHECK, str(path), json.dumps(spec)], check=True,
                                 capture_output=True, text=True, cwd=HERE).stdout
            facts = json.loads(out)
            print(f"degree tail {side:6s}: top 1% of nodes hold {facts['endpoints']:.1%} of the endpoints "
                  f"(lhs {facts['lhs']:.1%}, rhs {facts['rhs']:.1%}), max degree {facts['max_degree']:,}",
                  flush=True)

    work = Path(tempfile.mkdtemp(prefix="generate_speed-", dir=args.work))
    rows = []
    try:
        for ids in args.ids:
            spec = {"nodes": args.nodes, "edges": args.edges, "seed": 0, "int_ids": ids == "int"}
            for output in args.outputs:
                rates: dict[str, list[float]] = {side: [] for side in sides}
                cpus: dict[str, list[float]] = {side: [] for side in sides}
                for r in range(args.rounds):
                    for side, path in sides.items():
                        seconds, cpu = timed_write(path, spec, work, pipe=output == "pipe")
                        rates[side].append(args.edges / seconds)
                        cpus[side].append(cpu / args.edges * 1e9)
                        print(f"  {ids} ids, {output}, round {r + 1}: {side} {args.edges / seconds / 1e6:.2f}M "
                              f"edges/s ({seconds:.1f} s, CPU {cpu:.1f} s), load {os.getloadavg()[0]:.2f}",
                              flush=True)
                rows.append((f"{ids} ids, to a {'file' if output == 'file' else 'pipe (cat > /dev/null)'}",
                             spread(rates["before"]), spread(rates["after"]),
                             statistics.median(rates["after"]) / statistics.median(rates["before"]),
                             f"{statistics.median(cpus['before']):.0f} / {statistics.median(cpus['after']):.0f}"))
            command = [args.edges / timed_command(spec) for _ in range(args.rounds)]
            rows.append((f"{ids} ids, `bigembed generate -o - \\| cat > /dev/null` (whole command)", "-",
                         spread(command), None, "-"))
    finally:
        for f in sorted(work.rglob("*"), reverse=True):
            f.rmdir() if f.is_dir() else f.unlink()
        work.rmdir()

    print(f"\n{args.nodes:,} nodes, {args.edges:,} edges, {args.rounds} alternating rounds; "
          "edges/s, median (min-max)\n")
    print("| output | before, edges/s | after, edges/s | after / before | CPU ns an edge, before / after |")
    print("|---|---|---|---|---|")
    for name, before, after, ratio, cpu in rows:
        print(f"| {name} | {before} | {after} | {'' if ratio is None else f'{ratio:.1f}x'} | {cpu} |")
    print(f"\nload average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
