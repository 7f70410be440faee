"""Does training time grow linearly with edges, and memory stay flat? One graph size per row.

For each edge count the same number of nodes gets a generated graph (planted communities,
one relation, integer ids), imported with ``-p P``, and ``--epochs`` epochs of training with
the throughput settings (dim 128, dot + margin ranking, 50 in-batch + 50 uniform negatives,
batch 1000, 2 workers). Reported per row, over the epochs after the first (as in
throughput.py: the first carries the start-up): the epoch's wall time with the checkpoint
commit before it (from stats.jsonl) and without it (its buckets' training and partition
waits), edges/s both ways, the training process's peak RSS, and these relative to the first
row. The commit writes the whole table, so it costs the same at every edge count: with
1M nodes it is about as long as a 1M-edge epoch's training. Each graph's files are deleted
after its row (100M edges take about 5 GB of text and edge arrays).

With a fixed node count, a bigger graph trains each node more per epoch, and with the
ranking loss the C kernel then skips more inactive hinges: the per-edge work falls as the
graph grows. ``--ranking-kernel dense`` (``training.ranking_gradients``) holds it fixed, so
that the rows differ in graph size alone.

    python benchmarks/scaling.py --nodes 1000000 --edges 1000000 10000000 100000000 --ranking-kernel dense

With ``--recipe defaults`` training uses bigembed's defaults (at ``--dim``) instead; with
several ``--nodes`` and one ``--edges`` the rows differ in node count alone, which shows
whether the cost per edge depends on the number of nodes (with sampled negatives it
should not)::

    python benchmarks/scaling.py --recipe defaults --dim 64 --nodes 100000 10000000 --edges 2000000
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from measure import BIGEMBED, epoch_seconds, run_measured, training_seconds

from bigembed.storage.data_manifest import read_data_manifest

HERE = Path(__file__).resolve().parent
CONFIG = """[model]
dim = 128
operator = "none"
comparator = "dot"
loss = "ranking"
margin = 0.1
reciprocal = false
regularizer = "none"
[training]
epochs = {epochs}
ranking_gradients = "{ranking}"
lr = 0.1
batch_size = 1000
negatives = 50
chunk_size = 50
workers = 2
batch_negatives = true
optimizer = "row_adagrad"
"""


DEFAULTS_CONFIG = """[model]
dim = {dim}
[training]
epochs = {epochs}
"""


def one_size(work: Path, nodes: int, edges: int, P: int, epochs: int, config_text: str) -> dict[str, Any]:
    folder = work / f"{nodes}-{edges}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    gen_wall, _ = run_measured([*BIGEMBED, "generate", "-o", str(folder / "graph"), "--nodes", str(nodes),
                                "--edges", str(edges), "--relations", "1", "--communities", "100", "--ids", "int",
                                "--no-progress"])
    data = folder / "data"
    import_wall, import_rss = run_measured([*BIGEMBED, "import", str(folder / "graph" / "train.tsv"), "-o", str(data),
                                            "-p", str(P), "--ids", "int", "--no-progress"])
    shutil.rmtree(folder / "graph")  # the text is not needed any more
    config = folder / "config.toml"
    config.write_text(config_text)
    train_edges = read_data_manifest(data).num_edges("train")
    wall, rss = run_measured([*BIGEMBED, "train", str(data), "-o", str(folder / "run"), "--config", str(config),
                              "--no-progress"])
    stats = folder / "run" / "stats.jsonl"
    times = epoch_seconds(stats)
    first = 1 if len(times) > 1 else 0
    epoch = sum(times[first:]) / len(times[first:])
    train = sum(training_seconds(stats, e) for e in range(first, len(times))) / len(times[first:])
    shutil.rmtree(folder)
    return {"nodes": nodes, "edges": edges, "train_edges": train_edges, "partitions": P,
            "generate_s": round(gen_wall, 1), "import_s": round(import_wall, 1),
            "import_peak_rss_mib": round(import_rss),
            "train_wall_s": round(wall, 1), "epochs_s": [round(t, 2) for t in times], "epoch_s": round(epoch, 2),
            "edges_per_s": round(train_edges / epoch), "train_s": round(train, 2),
            "train_edges_per_s": round(train_edges / train),
            "train_peak_rss_mib": round(rss)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", type=int, nargs="+", default=[1_000_000])
    ap.add_argument("--edges", type=int, nargs="+", default=[1_000_000, 10_000_000, 100_000_000])
    ap.add_argument("--partitions", type=int, default=1)
    ap.add_argument("--epochs", type=int, default=2,
                    help="epochs per graph; edges/s is over epochs 2..N (1: the only epoch, start-up included)")
    ap.add_argument("--ranking-kernel", choices=["auto", "sparse", "dense"], default="auto",
                    help="training.ranking_gradients (dense: the same work per edge at every size)")
    ap.add_argument("--recipe", choices=["throughput", "defaults"], default="throughput",
                    help="throughput: the settings above; defaults: bigembed's defaults at --dim")
    ap.add_argument("--dim", type=int, default=64, help="with --recipe defaults")
    ap.add_argument("--work", type=Path, default=HERE / "work" / "scaling")
    ap.add_argument("--out", type=Path, default=HERE / "work" / "scaling.json")
    args = ap.parse_args()
    if args.epochs < 1:
        ap.error("--epochs must be at least 1")
    rows: list[dict[str, Any]] = []
    config = (CONFIG.format(epochs=args.epochs, ranking=args.ranking_kernel) if args.recipe == "throughput"
              else DEFAULTS_CONFIG.format(dim=args.dim, epochs=args.epochs))
    for nodes, edges in [(n, e) for n in args.nodes for e in args.edges]:
        row = {**one_size(args.work, nodes, edges, args.partitions, args.epochs, config),
               "ranking_kernel": args.ranking_kernel, "recipe": args.recipe}
        first = rows[0] if rows else row
        row["edges_per_s_vs_first"] = round(row["edges_per_s"] / first["edges_per_s"], 3)
        row["train_edges_per_s_vs_first"] = round(row["train_edges_per_s"] / first["train_edges_per_s"], 3)
        row["rss_vs_first"] = round(row["train_peak_rss_mib"] / first["train_peak_rss_mib"], 3)
        rows.append(row)
        print(f"{row['nodes']:>11,} nodes, {row['train_edges']:>12,} train edges: training {row['train_s']:.1f} s, "
              f"{row['train_edges_per_s']:>9,} edges/s ({row['train_edges_per_s_vs_first']:.2f}x the first); "
              f"with the commit {row['epoch_s']:.1f} s, {row['edges_per_s']:>9,} edges/s "
              f"({row['edges_per_s_vs_first']:.2f}x)  peak RSS {row['train_peak_rss_mib']} MiB "
              f"({row['rss_vs_first']:.2f}x)  import {row['import_s']} s, {row['import_peak_rss_mib']} MiB",
              flush=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
