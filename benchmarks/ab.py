"""bigembed against an earlier bigembed, side by side in one invocation: generate, import, train.

Both trees are run on the same generated graph, alternating (before, after, before, ...)
so a slow spell of the machine hits both sides; each figure is the median of ``--repeats``
runs with the range beside it. Training is timed over epochs 2..N of a whole
``bigembed train`` (wall time per epoch from stats.jsonl), and the sampled test MRR of
each side's last run is printed beside it, so a change that is faster because it learns
less shows up.

Usage (``before`` is a checkout of the older commit, e.g. made with ``git worktree add``)::

    git worktree add /tmp/before 5a5ff69
    python benchmarks/ab.py --before /tmp/before [--nodes 100000 --edges 2000000 --partitions 1 4]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

from measure import epoch_seconds, run_measured

HERE = Path(__file__).resolve().parent.parent


def command(tree: Path) -> list[str]:
    return [sys.executable, "-c", f"import sys; sys.path.insert(0, {str(tree)!r}); "
            "from bigembed.cli.main import main; sys.argv[0] = 'bigembed'; main()"]


def env_for(tree: Path, work: Path) -> dict[str, str]:
    # each tree builds and caches its own C kernels
    return {**os.environ, "BIGEMBED_CACHE_DIR": str(work / f"cache-{tree.name}")}


def run(tree: Path, work: Path, args: list[str]) -> tuple[float, float]:
    return run_measured(["env", f"BIGEMBED_CACHE_DIR={work / f'cache-{tree.name}'}", *command(tree), *args])


def mrr(tree: Path, work: Path, run_dir: Path, data: Path) -> float:
    out = subprocess.run([*command(tree), "eval", str(run_dir), str(data), "--protocol", "sampled",
                          "--negatives", "1000", "--json", "-", "--no-progress"],
                         check=True, capture_output=True, text=True, env=env_for(tree, work)).stdout
    return float(json.loads(out)["mrr"])


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):,.0f} ({min(values):,.0f}-{max(values):,.0f})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", type=Path, required=True, help="checkout of the earlier bigembed")
    ap.add_argument("--after", type=Path, default=HERE, help="checkout of the later one (default: this one)")
    ap.add_argument("--nodes", type=int, default=100_000)
    ap.add_argument("--edges", type=int, default=2_000_000)
    ap.add_argument("--partitions", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--work", type=Path, default=Path("benchmarks/work/ab"))
    args = ap.parse_args()
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    work = args.work.resolve()
    graph = work / "graph"
    subprocess.run([*command(args.after), "generate", "-o", str(graph), "--nodes", str(args.nodes),
                    "--edges", str(args.edges), "--no-progress"], check=True)
    sides = {"before": args.before.resolve(), "after": args.after.resolve()}
    generates: dict[str, list[float]] = {s: [] for s in sides}
    imports: dict[str, list[float]] = {s: [] for s in sides}
    train: dict[tuple[str, int], list[float]] = {(s, p): [] for s in sides for p in args.partitions}
    quality: dict[tuple[str, int], float] = {}
    lines = sum(1 for _ in open(graph / "train.tsv"))
    for rep in range(args.repeats):
        for side, tree in sides.items():
            other = work / f"graph-{side}"
            shutil.rmtree(other, ignore_errors=True)
            wall, _ = run(tree, work, ["generate", "-o", str(other), "--nodes", str(args.nodes),
                                       "--edges", str(args.edges), "--no-progress"])
            generates[side].append(args.edges / wall)
            shutil.rmtree(other)
            for p in args.partitions:
                data, run_dir = work / f"data-{side}-{p}", work / f"run-{side}-{p}"
                shutil.rmtree(data, ignore_errors=True)
                shutil.rmtree(run_dir, ignore_errors=True)
                wall, _ = run(tree, work, ["import", str(graph / "train.tsv"), "--split", f"test={graph / 'test.tsv'}",
                                           "-o", str(data), "-p", str(p), "--no-progress"])
                if p == args.partitions[0]:
                    imports[side].append(lines / wall)
                run(tree, work, ["train", str(data), "-o", str(run_dir), "--epochs", str(args.epochs),
                                 "--dim", str(args.dim), "--no-progress"])
                epochs = epoch_seconds(run_dir / "stats.jsonl")[1:]
                edges = json.loads((data / "manifest.json").read_text())["splits"]["train"]["num_edges"]
                train[(side, p)].append(edges * len(epochs) / sum(epochs))
                if rep == args.repeats - 1:
                    quality[(side, p)] = mrr(tree, work, run_dir, data)
        print(f"repeat {rep + 1}/{args.repeats} done", file=sys.stderr)
    commit = {s: re.sub(r"\s+", "", subprocess.run(["git", "-C", str(t), "rev-parse", "--short", "HEAD"],
                                                   capture_output=True, text=True).stdout) for s, t in sides.items()}
    print(f"graph: {args.nodes} nodes, {lines} training lines; dim {args.dim}, epochs 2..{args.epochs}; "
          f"median (min-max) of {args.repeats} alternating runs")
    print(f"| measure | before ({commit['before']}) | after ({commit['after']}) |")
    print("|---|---|---|")
    print(f"| generate, edges/s (whole command) | {spread(generates['before'])} | {spread(generates['after'])} |")
    print(f"| import, edges/s (P={args.partitions[0]}) | {spread(imports['before'])} | {spread(imports['after'])} |")
    for p in args.partitions:
        print(f"| train P={p}, edges/s | {spread(train[('before', p)])} | {spread(train[('after', p)])} |")
        print(f"| sampled test MRR P={p} | {quality[('before', p)]:.4f} | {quality[('after', p)]:.4f} |")


if __name__ == "__main__":
    main()
