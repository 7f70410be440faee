"""Validation during training and early stopping: rank ``training.eval_split`` every
``training.eval_every`` epochs, keep the history and the best version in ``evals.json`` (that
version is pinned against garbage collection), and stop once ``training.early_stopping``
evaluations in a row have not beaten the best."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bigembed.checkpoint import VersionManifest, append_stats, collect_garbage, write_evals
from bigembed.config import Config
from bigembed.evaluation.ranking import evaluate_full
from bigembed.progress import progress_bar
from bigembed.storage.data_manifest import DataManifest


def validate(run_dir: Path, base: VersionManifest, data: DataManifest, config: Config, evals: dict[str, Any],
             epoch: int, log: Callable[[str], None], show_progress: bool) -> bool:
    """Rank the validation split of ``base`` (just committed after ``epoch``) when due, record
    it in stats.jsonl and ``evals`` (written to evals.json); False when early stopping says
    stop. Garbage collection then keeps the best version whatever its age."""
    t = config.training
    if not t.eval_every or (epoch + 1) % t.eval_every:
        return True
    total = 2 * data.num_edges(t.eval_split) * data.num_partitions
    start = time.perf_counter()
    with progress_bar(total, f"validate {t.eval_split}", "query", show_progress) as bar:
        metrics = evaluate_full(run_dir, base, data, config, t.eval_split, progress=bar.update)
    record = {"epoch": epoch + 1, "version": base.version, "split": t.eval_split,
              "mrr": metrics["mrr"], "hits@1": metrics["hits@1"], "hits@3": metrics["hits@3"],
              "hits@10": metrics["hits@10"], "mean_rank": metrics["mean_rank"],
              "nonfinite_scores": metrics.get("nonfinite_scores", 0),
              "seconds": round(time.perf_counter() - start, 2)}
    append_stats(run_dir, {"eval": record})
    evals["history"].append(record)
    best = evals.get("best")
    if best is None or record["mrr"] > best["mrr"]:
        evals["best"] = best = record
    since = sum(1 for r in evals["history"] if r["epoch"] > best["epoch"])
    stop = bool(t.early_stopping) and since >= t.early_stopping
    evals["early_stopped"] = stop
    write_evals(run_dir, evals)
    collect_garbage(run_dir, base, config.checkpoint.keep_versions, (int(best["version"]),))
    log(f"epoch {epoch + 1}: {t.eval_split} filtered MRR {record['mrr']:.4f}, Hits@10 {record['hits@10']:.4f} "
        f"(best {best['mrr']:.4f} at epoch {best['epoch']}, v{best['version']})")
    if stop:
        log(f"early stopping: no improvement in {since} evaluation(s); the best checkpoint is "
            f"v{best['version']} (epoch {best['epoch']}): use --version best with eval/export")
    return not stop
