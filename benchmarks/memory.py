"""Peak memory and epoch time of training with P partitions and a buffer of c, side by side.

Each run (``P:c``, or ``P:c:DTYPE`` to store the embeddings as DTYPE: float16 or bfloat16,
see ``training.storage_dtype``) trains the same generated graph for two epochs in its own process;
its peak RSS is read with os.wait4 and the second epoch's wall time from stats.jsonl
(the first epoch also writes the initial table). A buffer of c >= 3 uses the beta
order, with prefetching (training.prefetch, on by default).

Usage::

    python benchmarks/memory.py --nodes 8000000 --edges 20000000 --dim 128 --runs 1:2 16:4 16:2
    python benchmarks/memory.py --nodes 4000000 --runs 1:2 1:2:float16 1:2:bfloat16 8:2 8:2:float16

Besides time and RSS, each row has the bytes of the last checkpoint's embedding shards.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
from pathlib import Path

from measure import BIGEMBED, PBG_STYLE_SETS, epoch_seconds, io_wait_seconds, run_measured


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", type=int, default=1_000_000)
    ap.add_argument("--edges", type=int, default=2_000_000)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--runs", nargs="+", default=["1:2", "8:2"], help="P:c or P:c:DTYPE")
    ap.add_argument("--extra", nargs="*", default=[], help="more `bigembed train` arguments for every run")
    ap.add_argument("--work", type=Path, default=Path("benchmarks/work/memory"))
    ap.add_argument("--out", type=Path, default=None, help="write the rows as JSON here")
    args = ap.parse_args()
    graph = args.work / f"graph-{args.nodes}-{args.edges}"
    if not (graph / "train.tsv").exists():
        subprocess.run([*BIGEMBED, "generate", "-o", str(graph), "--nodes", str(args.nodes), "--edges",
                        str(args.edges), "--ids", "int", "--communities", "100", "--no-progress"], check=True)
    table_mib = args.nodes * (args.dim + 1) * 4 / 2**20
    print(f"graph: {args.nodes} nodes, {args.edges} edges, dim {args.dim}: table {table_mib:.0f} MiB", flush=True)
    rows = []
    for run in args.runs:
        fields = run.split(":")
        P, c = int(fields[0]), int(fields[1])
        dtype = fields[2] if len(fields) > 2 else "float32"
        data, run_dir = args.work / f"{graph.name}-data{P}", args.work / f"{graph.name}-run{P}-c{c}-{dtype}"
        if not (data / "manifest.json").exists():
            subprocess.run([*BIGEMBED, "import", str(graph / "train.tsv"), "-o", str(data), "-p", str(P),
                            "--ids", "int", "--no-progress"], check=True)
        shutil.rmtree(run_dir, ignore_errors=True)
        order = ["--set", "training.bucket_order=beta"] if c >= 3 else []
        wall, rss = run_measured([*BIGEMBED, "train", str(data), "-o", str(run_dir), "--dim", str(args.dim),
                                  "--epochs", "2", "--set", f"training.buffer_partitions={c}", *order,
                                  "--set", f"training.storage_dtype={dtype}",
                                  *PBG_STYLE_SETS, *args.extra, "--no-progress"])
        epochs = epoch_seconds(run_dir / "stats.jsonl")
        current = (run_dir / "CURRENT").read_text().strip()
        shards = sum(f.stat().st_size for f in (run_dir / "checkpoints" / current).glob("emb_*/**/*") if f.is_file())
        rows.append({"P": P, "c": c, "dtype": dtype, "emb_shards_mib": round(shards / 2**20),
                     "train_wall_s": round(wall, 1), "epoch2_s": round(epochs[-1], 1),
                     "epoch2_io_wait_s": round(io_wait_seconds(run_dir / "stats.jsonl", 1), 1),
                     "peak_rss_mib": round(rss)})
        shutil.rmtree(run_dir, ignore_errors=True)  # GBs each: keep the disk for the next run
        print(json.dumps(rows[-1]), flush=True)
    base = rows[0]
    print(f"{'P':>3} {'c':>2} {'dtype':>9} {'shards MiB':>10} {'epoch 2 s':>10} {'IO wait s':>10} "
          f"{'peak RSS MiB':>13} {'RSS vs first':>13} {'time vs first':>14}")
    for r in rows:
        print(f"{r['P']:>3} {r['c']:>2} {r['dtype']:>9} {r['emb_shards_mib']:>10} {r['epoch2_s']:>10.1f} "
              f"{r['epoch2_io_wait_s']:>10.1f} {r['peak_rss_mib']:>13} "
              f"{r['peak_rss_mib'] / base['peak_rss_mib']:>13.2f} {r['epoch2_s'] / base['epoch2_s']:>14.2f}")
    if args.out:
        args.out.write_text(json.dumps({"nodes": args.nodes, "edges": args.edges, "dim": args.dim, "rows": rows},
                                       indent=2))


if __name__ == "__main__":
    main()
