"""Link-prediction quality on the real benchmarks, filtered full ranking, with wall times.

Each task imports a dataset from ../shared/datasets, trains bigembed with a
config from benchmarks/configs/, and ranks the test split against every node
with the filtered protocol (`bigembed eval`, realistic ties). Tasks:

* ``wn18rr``      the WN18RR config (published ComplEx: MRR 0.475, Hits@10 0.547)
* ``defaults``    ``bigembed train`` with no options on WN18RR, CoDEx-S, CoDEx-M and two
                  generated graphs (a relation-free social-style one, a planted 3-relation one),
                  each against a random embedding and the tuned recipe
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

from bigembed.generator import GraphSpec, write_graph

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


def train_and_eval(data: Path, run: Path, config: Path | None, extra: list[str]) -> dict[str, Any]:
    """Train from scratch (``run`` is replaced), then rank test and valid; returns figures.
    ``config`` None: bigembed's defaults."""
    if run.exists():
        import shutil

        shutil.rmtree(run)
    with_config = [] if config is None else ["--config", str(config)]
    wall, rss = run_measured([*BIGEMBED, "train", str(data), "-o", str(run), *with_config, "--no-progress", *extra])
    shown = "defaults" if config is None else str(config.relative_to(HERE.parent) if config.is_relative_to(HERE.parent)
                                                   else config)
    out: dict[str, Any] = {"config": shown,
                           "extra": extra, "train_wall_s": round(wall, 1), "train_peak_rss_mib": round(rss)}
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


# the tuned all-negatives recipes' filtered test MRR (benchmarks/configs, RESULTS.md)
TUNED_MRR = {"wn18rr": 0.4629, "codex-s": 0.4465, "codex-m": 0.3268}


def import_generated(name: str, out: Path, spec: GraphSpec, columns: str) -> Path:
    """A graph from ``bigembed generate``'s generator, imported with P=1; valid and test cut to
    their first 3,000 edges, so that ranking them against every node stays quick."""
    data = out / name
    if not (data / "manifest.json").exists():
        raw = out / f"{name}-raw"
        paths = write_graph(spec, raw)
        for split in ("valid", "test"):
            lines = paths[split].read_text().splitlines(keepends=True)[:3000]
            paths[split].write_text("".join(lines))
        run_measured([*BIGEMBED, "import", str(paths["train"]), "--split", f"valid={paths['valid']}",
                      "--split", f"test={paths['test']}", "--columns", columns, "-o", str(data), "-p", "1",
                      "--overwrite", "--no-progress"])
    return data


GENERATED = {  # name: (spec, columns)
    "social": (GraphSpec(nodes=50_000, edges=500_000, relations=1, communities=200, seed=1), "lhs,_,rhs"),
    "planted": (GraphSpec(nodes=20_000, edges=300_000, relations=3, communities=20, seed=2), "lhs,rel,rhs"),
}


def task_defaults(work: Path, names: tuple[str, ...] = ("wn18rr", "codex-s", "codex-m", "social", "planted")
                  ) -> dict[str, Any]:
    """``bigembed train DATA -o RUN`` with no option at all, on each dataset, against an untrained
    (random) embedding of the same run and, for the real datasets, the tuned recipes."""
    out: dict[str, Any] = {}
    for name in names:
        data = import_generated(name, work, *GENERATED[name]) if name in GENERATED else import_dataset(name, work, 1)
        row = train_and_eval(data, work / f"run-defaults-{name}", None, [])
        random = train_and_eval(data, work / f"run-random-{name}", None, ["--epochs", "0"])
        row["random_test_mrr"] = random["test"]["mrr"]
        if name in TUNED_MRR:
            row["tuned_test_mrr"] = TUNED_MRR[name]
            row["share_of_tuned"] = round(row["test"]["mrr"] / TUNED_MRR[name], 3)
        out[name] = row
        print(name, json.dumps(row), flush=True)
    return out


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
    """bigembed and PBG with the same dimension, epochs, operator, loss and negatives, and
    everything else PBG does (both sides corrupted, in-batch negatives, relations started at
    the identity, row Adagrad, no regulariser, a global vector added to every row as PBG's
    ``global_emb``); bigembed once as PBG computes the softmax and
    once with its sampled-softmax correction (``model.softmax_correction``, its default)."""
    from pbg_baseline import run_pbg

    config = work / f"same-as-pbg-{dataset}.toml"
    s = settings
    config.write_text(
        f'[model]\ndim = {s["dim"]}\noperator = "{s["operator"]}"\ncomparator = "{s["comparator"]}"\n'
        f'loss = "{s["loss"]}"\nmargin = {s["margin"]}\nreciprocal = false\nregularizer = "none"\n'
        f'relation_init = "identity"\nglobal_emb = {str(s.get("global_emb", True)).lower()}\n'
        f'[training]\nepochs = {s["epochs"]}\nlr = {s["lr"]}\nrelation_lr = {s["relation_lr"]}\n'
        f'batch_size = {s["batch_size"]}\nnegatives = {s["uniform_negs"]}\nbatch_negatives = true\n'
        f'chunk_size = {s["batch_negs"]}\nall_negatives = {str(s["all_negs"]).lower()}\nworkers = 2\n'
        f'optimizer = "row_adagrad"\n'
    )
    data = import_dataset(dataset, work, 1)
    plain = train_and_eval(data, work / f"run-pbg-settings-{dataset}", config,
                           ["--set", "model.softmax_correction=false"])
    ours = train_and_eval(data, work / f"run-pbg-settings-corrected-{dataset}", config, [])
    pbg = run_pbg(dataset=dataset, workdir=work / f"pbg-{dataset}", pbg_python=pbg_python, **settings)
    return {"dataset": dataset, "settings": settings, "bigembed_plain_softmax": plain, "bigembed": ours, "pbg": pbg}


PBG_SETTINGS = {
    "dim": 200, "epochs": 10, "operator": "complex_diagonal", "comparator": "dot", "loss": "softmax",
    "margin": 0.1, "lr": 0.1, "relation_lr": 0.1, "batch_size": 1000, "uniform_negs": 1000,
    "batch_negs": 50, "all_negs": False, "global_emb": True,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("tasks", nargs="+",
                        choices=["wn18rr", "codex-m", "codex-s", "defaults", "partitions", "partitions-sampled", "half",
                                 "pbg"])
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
        elif task == "defaults":
            results[task] = task_defaults(args.work)
        elif task == "pbg":
            results[task] = task_pbg(args.work, args.pbg_dataset, PBG_SETTINGS, args.pbg_python)
        else:
            results[task] = task_dataset(task, args.work)
        print(json.dumps(results[task], indent=2), flush=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
