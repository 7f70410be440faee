"""Training throughput: bigembed against PyTorch-BigGraph 1.0.0 on the same generated graph.

One run generates a graph with planted communities (one relation), imports it
for both systems, trains each for ``--epochs`` epochs (2 by default) with the same
settings (dimension, operator, comparator, loss, negatives, batch size, workers,
partitions) and prints, side by side: edges/s over every epoch but the first
(PyTorch-BigGraph 1.0.0's first epoch carries a fixed start-up delay, so both are
measured from epoch 2 on; each epoch includes the checkpoint written after it),
wall time per epoch, peak RSS of the training process, the filtered test MRR
(bigembed's evaluator for both, see pbg_baseline.py) and the speed ratio.

PBG runs in its own venv (see pbg_baseline.py for how to create it)::

    python benchmarks/throughput.py --nodes 100000 --edges 2000000 --partitions 1 4

Results go to benchmarks/work/throughput.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
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


def generate(work: Path, nodes: int, edges: int, seed: int) -> Path:
    """The graph as a dataset folder with train/valid/test.txt (0.5% of edges each for valid, test)."""
    name = f"gen-{nodes}-{edges}-s{seed}"
    folder = work / "datasets" / name
    if not (folder / "test.txt").exists():
        tmp = work / "datasets" / f".{name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        paths = write_graph(GraphSpec(nodes=nodes, edges=edges, relations=1, communities=50, seed=seed), tmp,
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", type=int, default=100_000)
    ap.add_argument("--edges", type=int, default=2_000_000)
    ap.add_argument("--partitions", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--pbg-python", default=DEFAULT_PBG_PYTHON)
    ap.add_argument("--skip-pbg", action="store_true", help="bigembed only")
    ap.add_argument("--autograd-too", action="store_true",
                    help="also train bigembed with training.fused_step = false (the autograd step, as before the "
                         "fused one), in the same run")
    ap.add_argument("--dtypes", nargs="*", default=[], choices=["float16", "bfloat16"],
                    help="also train bigembed with the embeddings stored as these (training.storage_dtype)")
    ap.add_argument("--device", default="cpu",
                    help="training.device of bigembed's runs (cuda: on the GPU; PBG stays on the CPU)")
    ap.add_argument("--epochs", type=int, default=2,
                    help="epochs per system (edges/s is over epochs 2..N, so more epochs average out the shared "
                         "machine's drift and give the test MRRs time to leave the noise)")
    ap.add_argument("--work", type=Path, default=HERE / "work" / "throughput")
    ap.add_argument("--out", type=Path, default=HERE / "work" / "throughput.json")
    args = ap.parse_args()
    if args.epochs < 2:
        ap.error("--epochs must be at least 2: the first epoch is not timed")
    settings = {**SETTINGS, "epochs": args.epochs}
    args.work.mkdir(parents=True, exist_ok=True)
    dataset = generate(args.work, args.nodes, args.edges, args.seed)
    train_edges = sum(1 for _ in open(dataset / "train.txt"))
    results: dict[str, Any] = {"graph": {"nodes": args.nodes, "edges": args.edges, "train_edges": train_edges},
                               "settings": settings, "bigembed_device": args.device, "runs": {}}
    for P in args.partitions:
        row: dict[str, Any] = {"bigembed": run_bigembed(dataset, args.work / f"p{P}", P, settings,
                                                        device=args.device)}
        if args.autograd_too:
            row["bigembed-autograd"] = run_bigembed(dataset, args.work / f"p{P}", P, settings, fused=False)
        for dtype in args.dtypes:
            row[f"bigembed-{dtype}"] = run_bigembed(dataset, args.work / f"p{P}", P, settings, dtype=dtype)
        if not args.skip_pbg:
            pbg = run_pbg(dataset.name, args.work / f"p{P}" / "pbg", args.pbg_python, datasets=dataset.parent,
                          data_dir=args.work / f"p{P}" / "bigembed-data-p1-for-pbg", num_partitions=P,
                          check_triples=10, **settings)
            row["pbg"] = {"train_wall_s": pbg["train_wall_s"], "epoch_wall_s": pbg["epoch_wall_s"],
                          "peak_rss_mib": pbg["peak_rss_mib"], "test_mrr": round(pbg["test"]["mrr"], 4),
                          "test_hits@10": round(pbg["test"]["hits@10"], 4)}
        for r in row.values():  # every epoch after the first (PBG 1.0.0's first has a start-up delay)
            later = r["epoch_wall_s"][1:]
            r["edges_per_s"] = round(train_edges * len(later) / sum(later))
        if "pbg" in row:
            row["speedup"] = round(row["bigembed"]["edges_per_s"] / row["pbg"]["edges_per_s"], 2)
            row["mrr_diff"] = round(row["bigembed"]["test_mrr"] - row["pbg"]["test_mrr"], 4)
        results["runs"][f"P={P}"] = row
        for system, r in row.items():
            if isinstance(r, dict):
                print(f"P={P} {system:17s} epochs 2-{args.epochs} {r['edges_per_s']:>9,} edges/s  "
                      f"epochs {r['epoch_wall_s']} s  peak RSS {r['peak_rss_mib']} MiB  test MRR {r['test_mrr']}",
                      flush=True)
        if "speedup" in row:
            print(f"P={P} bigembed / PBG: {row['speedup']}x edges/s, MRR difference {row['mrr_diff']:+.4f}", flush=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
