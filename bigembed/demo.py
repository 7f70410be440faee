"""`bigembed demo`: the whole user path on a small built-in synthetic graph."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bigembed.errors import BigembedError

MARKER = ".bigembed-demo"


def random_mrr(negatives: int) -> float:
    """Expected MRR of random scores when ranking against ``negatives`` candidates."""
    return sum(1.0 / i for i in range(1, negatives + 2)) / (negatives + 1)


def run_demo(out: Path, log: Callable[[str], None], show_progress: bool = True) -> dict[str, Any]:
    from bigembed.checkpoint import read_current, read_manifest
    from bigembed.config import load_config
    from bigembed.evaluation import evaluate_sampled
    from bigembed.export import export_run
    from bigembed.generator import GraphSpec, write_graph
    from bigembed.partitioner import ImportSpec, Source
    from bigembed.partitioner.engine import import_data
    from bigembed.storage.data_manifest import read_data_manifest
    from bigembed.training import train

    out = Path(out)
    if out.exists():
        if not (out / MARKER).exists():
            raise BigembedError(f"{out}: exists and was not made by `bigembed demo`; pick another -o")
        shutil.rmtree(out)
    out.mkdir(parents=True)
    (out / MARKER).write_text("made by bigembed demo\n")
    log("$ bigembed generate -o graph --nodes 2000 --edges 40000 --relations 3 --communities 20")
    paths = write_graph(GraphSpec(nodes=2000, edges=40000, relations=3, communities=20), out / "graph")
    log("$ bigembed import graph/train.tsv --split valid=graph/valid.tsv --split test=graph/test.tsv -o data -p 4")
    spec = ImportSpec(sources=[Source(s, p) for s, p in paths.items()], num_partitions=4)
    _manifest, stats = import_data(spec, out / "data")
    log(f"  {stats.summary(spec.ids, spec.type_names)}")
    log("$ bigembed train data -o run --dim 32 --epochs 5")
    overrides = {"model.dim": 32, "training.epochs": 5}
    train(out / "data", out / "run", None, overrides, log=log, show_progress=show_progress)
    log("$ bigembed eval run data --split test --protocol sampled --negatives 100")
    data = read_data_manifest(out / "data")
    manifest = read_manifest(out / "run", read_current(out / "run") or 0)
    config = load_config(overrides=overrides)
    metrics = evaluate_sampled(out / "run", manifest, data, config, "test", 100)
    log(f"  MRR {metrics['mrr']:.4f}  Hits@1 {metrics['hits@1']:.4f}  Hits@10 {metrics['hits@10']:.4f}  "
        f"AUC {metrics['auc']:.4f}")
    log("$ bigembed export run -o export --format tsv")
    export_run(out / "run", manifest, data, out / "export", "tsv", 32)
    return {**metrics, "random_mrr": random_mrr(100)}
