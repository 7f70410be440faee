"""Peak memory of training with P=1 against P=8 partitions on the same graph, side by side.

Each training run is a separate process; its peak RSS is read with os.wait4.
Usage:  python benchmarks/memory.py [--nodes 1000000] [--edges 2000000] [--dim 128]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
from pathlib import Path

from measure import BIGEMBED, run_measured


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--nodes", type=int, default=1_000_000)
    ap.add_argument("--edges", type=int, default=2_000_000)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--partitions", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--work", type=Path, default=Path("benchmarks/work/memory"))
    args = ap.parse_args()
    shutil.rmtree(args.work, ignore_errors=True)
    graph = args.work / "graph"
    subprocess.run([*BIGEMBED, "generate", "-o", str(graph), "--nodes", str(args.nodes), "--edges",
                    str(args.edges), "--ids", "int", "--communities", "100", "--no-progress"], check=True)
    table_mib = args.nodes * (args.dim + 1) * 4 / 2**20
    print(f"graph: {args.nodes} nodes, {args.edges} edges, dim {args.dim}: table {table_mib:.0f} MiB")
    rows = []
    for P in args.partitions:
        data, run_dir = args.work / f"data{P}", args.work / f"run{P}"
        subprocess.run([*BIGEMBED, "import", str(graph / "train.tsv"), "-o", str(data), "-p", str(P),
                        "--ids", "int", "--no-progress"], check=True)
        wall, rss = run_measured([*BIGEMBED, "train", str(data), "-o", str(run_dir), "--dim", str(args.dim),
                                  "--epochs", "1", "--no-progress"])
        rows.append((P, wall, rss))
    print(f"{'P':>3} {'epoch wall s':>13} {'peak RSS MiB':>13} {'vs P=' + str(rows[0][0]):>8}")
    for P, wall, rss in rows:
        print(f"{P:>3} {wall:>13.1f} {rss:>13.0f} {rss / rows[0][2]:>8.2f}")


if __name__ == "__main__":
    main()
