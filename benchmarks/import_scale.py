"""Import time and peak RSS as the edge count grows with the node count fixed, side by side.

Memory should stay flat (it grows with nodes, not edges) and time grow linearly. The
generator's power-law degrees reveal more of the node set as edges grow, so the node
count is printed too.
Usage:  python benchmarks/import_scale.py [--nodes 1000000] [--edges 2000000 20000000] [--partitions 8]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
from pathlib import Path

from measure import BIGEMBED, run_measured


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--nodes", type=int, default=1_000_000)
    ap.add_argument("--edges", type=int, nargs="+", default=[2_000_000, 20_000_000])
    ap.add_argument("--partitions", type=int, default=8)
    ap.add_argument("--exponent", type=float, default=1.0, help="popularity exponent (0: every node equally likely)")
    ap.add_argument("--work", type=Path, default=Path("benchmarks/work/import"))
    args = ap.parse_args()
    shutil.rmtree(args.work, ignore_errors=True)
    rows = []
    for edges in args.edges:
        graph, data = args.work / f"g{edges}", args.work / f"d{edges}"
        subprocess.run([*BIGEMBED, "generate", "-o", str(graph), "--nodes", str(args.nodes), "--edges", str(edges),
                        "--exponent", str(args.exponent), "--no-progress"], check=True)
        size = (graph / "train.tsv").stat().st_size
        wall, rss = run_measured([*BIGEMBED, "import", str(graph / "train.tsv"), "-o", str(data), "-p",
                           str(args.partitions), "--no-progress"])
        manifest = json.loads((data / "manifest.json").read_text())
        (entity,) = manifest["entities"].values()
        rows.append((sum(entity["counts"]), manifest["splits"]["train"]["num_edges"], size, wall, rss))
        shutil.rmtree(graph)
        shutil.rmtree(data)
    print(f"{'nodes':>9} {'edges':>11} {'file MiB':>9} {'wall s':>7} {'edges/s':>9} {'peak RSS MiB':>13}")
    for nodes, lines, size, wall, rss in rows:
        print(f"{nodes:>9} {lines:>11} {size / 2**20:>9.0f} {wall:>7.1f} {lines / wall:>9.0f} {rss:>13.0f}")


if __name__ == "__main__":
    main()
