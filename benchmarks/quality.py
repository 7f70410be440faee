"""Link-prediction quality on the real benchmarks, filtered full ranking, with wall times.

Each task imports a dataset from ../shared/datasets, trains bigembed with a
config from benchmarks/configs/, and ranks the test split against every node
with the filtered protocol (`bigembed eval`, realistic ties). Tasks:

* ``wn18rr``      the WN18RR config (published ComplEx: MRR 0.475, Hits@10 0.547)
* ``codex-m``     the CoDEx-M config (published ComplEx: MRR 0.337)
* ``partitions``  the CoDEx-S config trained with P=1 and with P=4 partitions (its
                  buffer holds all 4), and with P=4 and a buffer of 2 for comparison,
                  each with seeds 0, 1, 2 (``--seeds``), compared by their means
* ``partitions-sampled``  the same with sampled negatives (configs/codex-s-sampled.toml)
* ``half``        the CoDEx-S configs (all negatives and sampled) with the embeddings
                  stored as float32, float16 and bfloat16 (training.storage_dtype), each
                  with seeds 0, 1, 2 (``--seeds``), compared by their means
* ``pbg``         bigembed and PyTorch-BigGraph 1.0.0 (its own venv) with the same
                  dimension, epochs and negatives, ranked by the same evaluator

Usage::

    python benchmarks/quality.py wn18rr codex-m partitions pbg --out benchmarks/work/quality.json

Training runs in a child process whose wall time and peak RSS are measured.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from measure import BIGEMBED, run_measured

HERE = Path(__file__).resolve().parent
DATASETS = HERE.parent.parent / "shared" / "datasets"
CONFIGS = HERE / "configs"


def import_dataset(name: str, out: Path, partitions: int) -> Path:
    data = out / f"{name}-p{partitions}"
    if not (data / "manifest.json").exists():
        d = DATASETS / name
        run_measured([*BIGEMBED, "import", str(d / "train.txt"), "--split", f"valid={d / 'valid.txt'}",
                      "--split", f"test={d / 'test.txt'}", "-o", str(data), "-p", str(partitions),
                      "--overwrite", "--no-progress"])
    return data


def train_and_eval(data: Path, run: Path, config: Path, extra: list[str]) -> dict[str, Any]:
    """Train from scratch (``run`` is replaced), then rank test and valid; returns figures."""
    if run.exists():
        import shutil

        shutil.rmtree(run)
    wall, rss = run_measured([*BIGEMBED, "train", str(data), "-o", str(run), "--config", str(config),
                              "--no-progress", *extra])
    out: dict[str, Any] = {"config": str(config.relative_to(HERE.parent)), "extra": extra,
                           "train_wall_s": round(wall, 1), "train_peak_rss_mib": round(rss)}
    for split in ("valid", "test"):
        metrics_file = run / f"{split}.json"
        start = time.perf_counter()
        run_measured([*BIGEMBED, "eval", str(run), str(data), "--split", split, "--json", str(metrics_file),
                      "--no-progress"])
        m = json.loads(metrics_file.read_text())
        out[split] = {k: round(m[k], 4) for k in ("mrr", "hits@1", "hits@3", "hits@10", "mean_rank")}
        out[f"{split}_eval_s"] = round(time.perf_counter() - start, 1)
    evals = run / "evals.json"
    if evals.exists():
        out["validation_history"] = [
            {"epoch": r["epoch"], "mrr": round(r["mrr"], 4)} for r in json.loads(evals.read_text())["history"]
        ]
    return out


def task_dataset(name: str, work: Path) -> dict[str, Any]:
    data = import_dataset(name, work, 1)
    return {"dataset": name, "partitions": 1,
            **train_and_eval(data, work / f"run-{name}", CONFIGS / f"{name}.toml", [])}


def task_partitions(work: Path, dataset: str = "codex-s", config: str = "codex-s",
                    seeds: tuple[int, ...] = (0,)) -> dict[str, Any]:
    """A config, unchanged, on one partition and on four (its buffer holding all four), and on
    four with a buffer of two (half the table in memory; negatives then come from the answer's
    partition only). Each is trained once per seed (``training.seed``: initialisation,
    negatives, orders); the gaps are between the means over seeds."""
    out: dict[str, Any] = {"dataset": dataset, "config": config, "seeds": list(seeds)}
    runs = {"P=1": (1, []), "P=4": (4, []), "P=4,c=2": (4, ["--set", "training.buffer_partitions=2"])}
    for name, (P, extra) in runs.items():
        data = import_dataset(dataset, work, P)
        per_seed = []
        for seed in seeds:
            tag = name.replace("=", "").replace(",", "-").lower()
            per_seed.append(train_and_eval(data, work / f"run-{config}-{tag}-s{seed}", CONFIGS / f"{config}.toml",
                                           [*extra, "--set", f"training.seed={seed}"]))
        mrrs = [r["test"]["mrr"] for r in per_seed]
        out[name] = {"test_mrr_per_seed": mrrs, "test_mrr_mean": round(sum(mrrs) / len(mrrs), 4),
                     "test_hits@10_mean": round(sum(r["test"]["hits@10"] for r in per_seed) / len(per_seed), 4),
                     "train_wall_s_mean": round(sum(r["train_wall_s"] for r in per_seed) / len(per_seed), 1),
                     "train_peak_rss_mib_max": max(r["train_peak_rss_mib"] for r in per_seed)}
    out["mrr_gap"] = round(abs(out["P=1"]["test_mrr_mean"] - out["P=4"]["test_mrr_mean"]), 4)
    out["mrr_gap_c2"] = round(abs(out["P=1"]["test_mrr_mean"] - out["P=4,c=2"]["test_mrr_mean"]), 4)
    return out


def task_half(work: Path, seeds: tuple[int, ...]) -> dict[str, Any]:
    """The CoDEx-S configs, unchanged but for ``training.storage_dtype``, on one partition."""
    data = import_dataset("codex-s", work, 1)
    out: dict[str, Any] = {"dataset": "codex-s", "seeds": list(seeds)}
    for config in ("codex-s", "codex-s-sampled"):
        row: dict[str, Any] = {}
        for dtype in ("float32", "float16", "bfloat16"):
            per_seed = [train_and_eval(data, work / f"run-{config}-{dtype}-s{seed}", CONFIGS / f"{config}.toml",
                                       ["--set", f"training.storage_dtype={dtype}", "--set", f"training.seed={seed}"])
                        for seed in seeds]
            mrrs = [r["test"]["mrr"] for r in per_seed]
            row[dtype] = {"test_mrr_per_seed": mrrs, "test_mrr_mean": round(sum(mrrs) / len(mrrs), 4),
                          "train_wall_s_mean": round(sum(r["train_wall_s"] for r in per_seed) / len(per_seed), 1),
                          "train_peak_rss_mib_max": max(r["train_peak_rss_mib"] for r in per_seed)}
        out[config] = row
    return out


def task_pbg(work: Path, dataset: str, settings: dict[str, Any], pbg_python: str) -> dict[str, Any]:
    """bigembed and PBG with the same dimension, epochs, operator, loss and negatives."""
    from pbg_baseline import run_pbg

    config = work / f"same-as-pbg-{dataset}.toml"
    s = settings
    config.write_text(
        f'[model]\ndim = {s["dim"]}\noperator = "{s["operator"]}"\ncomparator = "{s["comparator"]}"\n'
        f'loss = "{s["loss"]}"\nmargin = {s["margin"]}\n'
        f'[training]\nepochs = {s["epochs"]}\nlr = {s["lr"]}\nrelation_lr = {s["relation_lr"]}\n'
        f'batch_size = {s["batch_size"]}\nnegatives = {s["uniform_negs"]}\n'
        f'chunk_size = {s["batch_negs"]}\nall_negatives = {str(s["all_negs"]).lower()}\nworkers = 2\n'
    )
    data = import_dataset(dataset, work, 1)
    ours = train_and_eval(data, work / f"run-pbg-settings-{dataset}", config, [])
    pbg = run_pbg(dataset=dataset, workdir=work / f"pbg-{dataset}", pbg_python=pbg_python, **settings)
    return {"dataset": dataset, "settings": settings, "bigembed": ours, "pbg": pbg}


PBG_SETTINGS = {
    "dim": 200, "epochs": 10, "operator": "complex_diagonal", "comparator": "dot", "loss": "softmax",
    "margin": 0.1, "lr": 0.1, "relation_lr": 0.1, "batch_size": 1000, "uniform_negs": 1000,
    "batch_negs": 50, "all_negs": False,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("tasks", nargs="+",
                        choices=["wn18rr", "codex-m", "codex-s", "partitions", "partitions-sampled", "half", "pbg"])
    parser.add_argument("--work", type=Path, default=HERE / "work" / "quality")
    parser.add_argument("--out", type=Path, default=HERE / "work" / "quality.json")
    parser.add_argument("--pbg-python", default="/tmp/pbgvenv/bin/python")
    parser.add_argument("--pbg-dataset", default="wn18rr")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="for the partitions and half tasks")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = json.loads(args.out.read_text()) if args.out.exists() else {}
    for task in args.tasks:
        print(f"== {task}", flush=True)
        if task == "partitions":
            results[task] = task_partitions(args.work, seeds=tuple(args.seeds))
        elif task == "partitions-sampled":
            results[task] = task_partitions(args.work, config="codex-s-sampled", seeds=tuple(args.seeds))
        elif task == "half":
            results[task] = task_half(args.work, tuple(args.seeds))
        elif task == "pbg":
            results[task] = task_pbg(args.work, args.pbg_dataset, PBG_SETTINGS, args.pbg_python)
        else:
            results[task] = task_dataset(task, args.work)
        print(json.dumps(results[task], indent=2), flush=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
