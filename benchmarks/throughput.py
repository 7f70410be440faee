"""Training throughput: bigembed against PyTorch-BigGraph 1.0.0 on the same generated graph.

One run generates a graph with planted communities (``--relations``, ``--communities``),
imports it for both systems, trains each for ``--epochs`` epochs (2 by default) with the same
settings (dimension, operator, comparator, loss, negatives, batch size, workers,
partitions) and prints, side by side:

- the whole training command's wall time, as users wait for it (start-up, every epoch, the
  checkpoints), and its ratio PBG / bigembed;
- edges/s over every epoch but the first (PyTorch-BigGraph 1.0.0's first epoch carries a
  fixed start-up delay; each epoch includes the checkpoint written after it) and its ratio;
- wall time per epoch, peak RSS of the training process;
- the filtered test MRR and Hits@10 (bigembed's evaluator for both, see pbg_baseline.py).
  With the default 50 communities of 2,000 nodes a model can only learn which community a
  node's neighbours are in, so MRRs stay near 0.01 and do not tell the systems apart; more,
  smaller communities (``--communities 5000``: 20 nodes each) give MRRs that do.

``--rounds N`` repeats both sides N times, alternating which goes first, and reports each
round and the median with min-max.

PBG runs in its own venv (see pbg_baseline.py for how to create it)::

    python benchmarks/throughput.py --nodes 100000 --edges 2000000 --partitions 1 4
    python benchmarks/throughput.py --nodes 100000 --edges 1700000 --relations 3 --communities 5000 \
        --partitions 1 --rounds 3

Results go to benchmarks/work/throughput.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from measure import BIGEMBED, epoch_seconds, run_measured
from pbg_baseline import DEFAULT_PBG_PYTHON, run_pbg

from bigembed.generator import GraphSpec, write_graph

HERE = Path(__file__).resolve().parent
SETTINGS: dict[str, Any] = {
    "dim": 128, "operator": "none", "comparator": "dot", "loss": "ranking", "margin": 0.1, "lr": 0.1,
    "relation_lr": 0.1, "batch_size": 1000, "uniform_negs": 50, "batch_negs": 50, "workers": 2, "epochs": 2,
}


def generate(work: Path, nodes: int, edges: int, seed: int, relations: int = 1, communities: int = 50) -> Path:
    """The graph as a dataset folder with train/valid/test.txt (0.5% of edges each for valid, test)."""
    name = f"gen-{nodes}-{edges}-s{seed}" + ("" if (relations, communities) == (1, 50) else
                                             f"-r{relations}-c{communities}")
    folder = work / "datasets" / name
    if not (folder / "test.txt").exists():
        tmp = work / "datasets" / f".{name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        paths = write_graph(GraphSpec(nodes=nodes, edges=edges, relations=relations, communities=communities,
                                      seed=seed), tmp,
                            splits=(0.005, 0.005))
        for split, path in paths.items():
            path.rename(tmp / f"{split}.txt")
        shutil.rmtree(folder, ignore_errors=True)
        tmp.rename(folder)
    return folder


def run_bigembed(dataset: Path, work: Path, P: int, s: dict[str, Any], fused: bool = True,
                 dtype: str = "float32", device: str = "cpu") -> dict[str, Any]:
    data = work / f"bigembed-data-p{P}"
    if not (data / "manifest.json").exists():
        run_measured([*BIGEMBED, "import", str(dataset / "train.txt"), "--split", f"valid={dataset / 'valid.txt'}",
                      "--split", f"test={dataset / 'test.txt'}", "-o", str(data), "-p", str(P), "--overwrite",
                      "--no-progress"])
    tag = (f"p{P}" + ("" if fused else "-autograd") + ("" if dtype == "float32" else f"-{dtype}")
           + ("" if device == "cpu" else f"-{device.replace(':', '')}"))
    config = work / f"bigembed-{tag}.toml"
    config.write_text(
        f'[model]\ndim = {s["dim"]}\noperator = "{s["operator"]}"\ncomparator = "{s["comparator"]}"\n'
        f'loss = "{s["loss"]}"\nmargin = {s["margin"]}\nreciprocal = false\nregularizer = "none"\n'
        f'relation_init = "identity"\n'
        f'[training]\nepochs = {s["epochs"]}\nlr = {s["lr"]}\nrelation_lr = {s["relation_lr"]}\n'
        f'batch_size = {s["batch_size"]}\nnegatives = {s["uniform_negs"]}\nchunk_size = {s["batch_negs"]}\n'
        f'batch_negatives = true\noptimizer = "row_adagrad"\n'
        f'workers = {s["workers"]}\nfused_step = {"true" if fused else "false"}\nstorage_dtype = "{dtype}"\n'
        f'device = "{device}"\n'
    )
    run = work / f"bigembed-run-{tag}"
    shutil.rmtree(run, ignore_errors=True)
    wall, rss = run_measured([*BIGEMBED, "train", str(data), "-o", str(run), "--config", str(config),
                              "--no-progress"])
    metrics = work / f"bigembed-test-{tag}.json"
    run_measured([*BIGEMBED, "eval", str(run), str(data), "--split", "test", "--json", str(metrics), "--no-progress"])
    m = json.loads(metrics.read_text())
    epochs = epoch_seconds(run / "stats.jsonl")
    return {"train_wall_s": round(wall, 2), "epoch_wall_s": [round(t, 2) for t in epochs], "peak_rss_mib": round(rss),
            "test_mrr": round(m["mrr"], 4), "test_hits@10": round(m["hits@10"], 4)}


def _spread(values: list[float], fmt: str = ",.2f") -> str:
    """The median with min-max, as RESULTS.md gives them."""
    med = statistics.median(values)
    return f"{med:{fmt}}" if len(values) == 1 else f"{med:{fmt}} ({min(values):{fmt}} to {max(values):{fmt}})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", type=int, default=100_000)
    ap.add_argument("--edges", type=int, default=2_000_000)
    ap.add_argument("--relations", type=int, default=1)
    ap.add_argument("--communities", type=int, default=50)
    ap.add_argument("--partitions", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rounds", type=int, default=1, help="repeat both sides, alternating which goes first")
    ap.add_argument("--pbg-python", default=DEFAULT_PBG_PYTHON)
    ap.add_argument("--skip-pbg", action="store_true", help="bigembed only")
    ap.add_argument("--autograd-too", action="store_true",
                    help="also time bigembed with training.fused_step=false (the autograd step)")
    ap.add_argument("--dtypes", nargs="*", default=[], choices=["float16", "bfloat16"],
                    help="also time bigembed with these storage dtypes")
    ap.add_argument("--device", default="cpu",
                    help="bigembed's training device (cpu, cuda, cuda:N); PBG always trains on the CPU")
    ap.add_argument("--workers", type=int, default=SETTINGS["workers"],
                    help="training threads for both systems (2, the development machine's cores, by default)")
    ap.add_argument("--epochs", type=int, default=2,
                    help="epochs per run (at least 2: edges/s is measured over epochs 2..N)")
    ap.add_argument("--work", type=Path, default=HERE / "work" / "throughput")
    ap.add_argument("--out", type=Path, default=HERE / "work" / "throughput.json")
    args = ap.parse_args()
    if args.epochs < 2:
        ap.error("--epochs must be at least 2: the first epoch is not timed")
    settings = {**SETTINGS, "epochs": args.epochs, "workers": args.workers}
    args.work.mkdir(parents=True, exist_ok=True)
    dataset = generate(args.work, args.nodes, args.edges, args.seed, args.relations, args.communities)
    train_edges = sum(1 for _ in open(dataset / "train.txt"))
    results: dict[str, Any] = {"graph": {"nodes": args.nodes, "edges": args.edges, "train_edges": train_edges,
                                         "relations": args.relations, "communities": args.communities},
                               "settings": settings, "bigembed_device": args.device, "runs": {}}
    for P in args.partitions:
        rounds: list[dict[str, Any]] = []
        for k in range(args.rounds):
            sides = ["bigembed", "pbg"] if k % 2 == 0 else ["pbg", "bigembed"]
            row: dict[str, Any] = {}
            for side in sides:
                if side == "bigembed":
                    row["bigembed"] = run_bigembed(dataset, args.work / f"p{P}", P, settings, device=args.device)
                    if args.autograd_too:
                        row["bigembed-autograd"] = run_bigembed(dataset, args.work / f"p{P}", P, settings,
                                                                fused=False)
                    for dtype in args.dtypes:
                        row[f"bigembed-{dtype}"] = run_bigembed(dataset, args.work / f"p{P}", P, settings,
                                                                dtype=dtype)
                elif not args.skip_pbg:
                    pbg = run_pbg(dataset.name, args.work / f"p{P}" / "pbg", args.pbg_python,
                                  datasets=dataset.parent, data_dir=args.work / f"p{P}" / "bigembed-data-p1-for-pbg",
                                  num_partitions=P, check_triples=10, keep_data=True, **settings)
                    row["pbg"] = {"train_wall_s": pbg["train_wall_s"], "epoch_wall_s": pbg["epoch_wall_s"],
                                  "peak_rss_mib": pbg["peak_rss_mib"], "test_mrr": round(pbg["test"]["mrr"], 4),
                                  "test_hits@10": round(pbg["test"]["hits@10"], 4)}
            for r in row.values():  # every epoch after the first (PBG 1.0.0's first has a start-up delay)
                later = r["epoch_wall_s"][1:]
                r["edges_per_s"] = round(train_edges * len(later) / sum(later))
            if "pbg" in row:
                row["speedup"] = round(row["bigembed"]["edges_per_s"] / row["pbg"]["edges_per_s"], 2)
                row["whole_command_speedup"] = round(row["pbg"]["train_wall_s"] / row["bigembed"]["train_wall_s"], 2)
                row["mrr_diff"] = round(row["bigembed"]["test_mrr"] - row["pbg"]["test_mrr"], 4)
            for system, r in row.items():
                if isinstance(r, dict):
                    print(f"P={P} round {k + 1} {system:17s} whole command {r['train_wall_s']:.1f} s  epochs "
                          f"2-{args.epochs} {r['edges_per_s']:>9,} edges/s  epochs {r['epoch_wall_s']} s  "
                          f"peak RSS {r['peak_rss_mib']} MiB  test MRR {r['test_mrr']}  Hits@10 {r['test_hits@10']}",
                          flush=True)
            if "speedup" in row:
                print(f"P={P} round {k + 1} bigembed / PBG: {row['whole_command_speedup']}x whole command, "
                      f"{row['speedup']}x edges/s, MRR difference {row['mrr_diff']:+.4f}", flush=True)
            rounds.append(row)
            results["runs"][f"P={P}"] = rounds[0] if args.rounds == 1 else rounds
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(results, indent=2))
        if args.rounds > 1 and all("speedup" in row for row in rounds):
            print(f"\nP={P}, {args.rounds} alternating rounds (median, min-max):")
            print("| system | whole command s | edges/s, epochs 2-N | test MRR | Hits@10 |")
            print("|---|---|---|---|---|")
            for system in ("bigembed", "pbg"):
                print(f"| {system} | {_spread([r[system]['train_wall_s'] for r in rounds], ',.1f')} | "
                      f"{_spread([r[system]['edges_per_s'] for r in rounds], ',.0f')} | "
                      f"{_spread([r[system]['test_mrr'] for r in rounds], '.4f')} | "
                      f"{_spread([r[system]['test_hits@10'] for r in rounds], '.4f')} |")
            print(f"| bigembed / PBG | {_spread([r['whole_command_speedup'] for r in rounds])}x | "
                  f"{_spread([r['speedup'] for r in rounds])}x | "
                  f"{_spread([r['mrr_diff'] for r in rounds], '+.4f')} (difference) | |")


if __name__ == "__main__":
    main()
