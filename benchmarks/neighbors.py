"""Neighbour queries per second on a RUN's table: the streamed brute force (kept in memory, and
with a memory budget below the table so every query reads the partitions), and FAISS (an
exact Flat index and an approximate IVF one, with its recall@k against the exact answers).

    python benchmarks/neighbors.py RUN --queries 200 --batch 1 64

Each figure is queries answered / wall seconds of ``Run.neighbors`` calls, ``--batch``
queries per call, after one warm-up call (which reads the partitions, or loads the index);
the one-shot `bigembed neighbors` command (start-up, name lookup, one query) is timed too.
The sides alternate for ``--rounds`` rounds. Results go to stdout as JSON lines.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from measure import BIGEMBED

import bigembed


def _qps(run: bigembed.Run, queries: list[str], batch: int, k: int, index: Path | None,
         search: str | None) -> tuple[float, list]:
    run.neighbors(queries[:batch], k=k, index=index, search=search)  # warm-up
    answers = []
    start = time.perf_counter()
    for i in range(0, len(queries), batch):
        answers += run.neighbors(queries[i : i + batch], k=k, index=index, search=search)
    return len(queries) / (time.perf_counter() - start), answers


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 64])
    ap.add_argument("-k", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--ivf", default="IVF1024,Flat", help="the approximate FAISS index to measure")
    ap.add_argument("--ivf-search", nargs="+", default=["nprobe=1", "nprobe=16", "nprobe=64"],
                    help="search parameters the approximate index is measured with, one side each")
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "bigembed-neighbors-bench")
    ap.add_argument("--skip-faiss", action="store_true")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    indexes: dict[str, Path] = {}
    if not args.skip_faiss:
        for name, factory in (("faiss-flat", "Flat"), ("faiss-ivf", args.ivf)):
            out = args.work / name
            t0 = time.perf_counter()
            subprocess.run([*BIGEMBED, "export", str(args.run), "-o", str(out), "--format", "faiss", "--faiss-index",
                            factory, "--overwrite", "--no-progress"], check=True)
            print(json.dumps({"build": name, "factory": factory, "seconds": round(time.perf_counter() - t0, 1)}),
                  flush=True)
            indexes[name] = out
    with bigembed.open_run(args.run) as probe:
        names = list(probe.names())
        table_mib = probe.num_nodes() * probe.dim * 4 / 2**20
    queries = random.Random(0).sample(names, args.queries)
    del names
    sides: list[tuple[str, Any, str | None]] = [("streamed, in memory", None, None),
                                                ("streamed, budget below the table", "small", None)]
    if indexes:
        sides.append(("faiss-flat", indexes["faiss-flat"], None))
        sides += [(f"faiss-ivf {p}", indexes["faiss-ivf"], p) for p in args.ivf_search]
    with bigembed.open_run(args.run) as run:  # the exact answers, for recall (untimed)
        exact = run.neighbors(queries, k=args.k)
    for r in range(args.rounds):
        for side, how, search in sides if r % 2 == 0 else sides[::-1]:
            memory = int(table_mib * 2**20 / 4) if how == "small" else None  # caches nothing
            index = how if isinstance(how, Path) else None
            with bigembed.open_run(args.run, memory=memory) as run:
                for batch in args.batch:
                    n = len(queries) if how != "small" else min(len(queries), 4 * batch)
                    qps, answers = _qps(run, queries[:n], batch, args.k, index, search)
                    row: dict[str, Any] = {"round": r, "side": side, "batch": batch, "queries": n,
                                           "qps": round(qps, 1), "table_mib": round(table_mib)}
                    if index is not None:
                        hits = [len({m.name for m in a} & {m.name for m in e}) / args.k
                                for a, e in zip(answers, exact, strict=False)]
                        row["recall@k"] = round(sum(hits) / len(hits), 4)
                    print(json.dumps(row), flush=True)
    for name, index in [("streamed", None), *indexes.items()]:
        cmd = [*BIGEMBED, "neighbors", str(args.run), queries[0], "-k", str(args.k)]
        if index is not None:
            cmd += ["--index", str(index)]
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        print(json.dumps({"one-shot command": name, "seconds": round(time.perf_counter() - t0, 2)}), flush=True)


if __name__ == "__main__":
    main()
