"""`bigembed info`: plain facts about a DATA or RUN directory."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from bigembed.errors import BigembedError
from bigembed.scheduler.memory import human


def _disk_bytes(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.path.getsize(os.path.join(root, name))
            except OSError:
                pass
    return total




def describe_data(path: Path) -> dict[str, Any]:
    from bigembed.storage.data_manifest import read_data_manifest

    dm = read_data_manifest(path)
    nonempty = {s: sum(1 for c in dm.bucket_counts[s].values() if c) for s in dm.splits()}
    return {
        "kind": "DATA",
        "path": str(path),
        "entity types": dm.describe_types(),
        "ids": dm.id_kind,
        "nodes": dm.num_entities,
        "partitions": dm.num_partitions,
        "nodes per partition": dm.entity_counts,
        "relations": len(dm.relations) if not dm.typed else ", ".join(
            f"{r} ({dm.type_names[a]} -> {dm.type_names[b]})" for r, (a, b) in zip(dm.relations, dm.relation_types)
        ),
        "buckets": dm.num_partitions ** 2,
        "edges": {s: dm.num_edges(s) for s in dm.splits()},
        "non-empty buckets": nonempty,
        "edge columns": ", ".join(f"{c} {d.name}" for c, d in dm.edge_dtypes.items()),
        "size on disk": human(_disk_bytes(path)),
    }


def last_epoch_stats(stats_file: Path) -> dict[str, Any] | None:
    """Summary of the last epoch in ``stats.jsonl`` (a torn last line, as a kill leaves, is skipped)."""
    per_epoch: dict[int, dict[int, dict[str, Any]]] = {}
    try:
        with open(stats_file) as handle:
            for line in handle:
                try:
                    record = json.loads(line)
                    per_epoch.setdefault(int(record["epoch"]), {})[int(record["bucket_index"])] = record
                except (ValueError, KeyError, TypeError):
                    continue
    except FileNotFoundError:
        return None
    if not per_epoch:
        return None
    epoch = max(per_epoch)
    records = per_epoch[epoch].values()  # a bucket retrained after a crash counts once
    edges = sum(r["edges"] for r in records)
    seconds = sum(r["seconds"] for r in records)
    loss = sum(r["loss"] * r["edges"] for r in records) / max(1, edges)
    return {"epoch": epoch + 1, "buckets": len(records), "edges": edges,
            "edges/s": round(edges / max(seconds, 1e-9)), "mean loss": round(loss, 4)}


def last_start(stats_file: Path) -> dict[str, Any] | None:
    """The last training start's record in ``stats.jsonl``: device, workers and kernels."""
    found = None
    try:
        with open(stats_file) as handle:
            for line in handle:
                if '"start"' not in line:
                    continue
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if isinstance(record, dict) and isinstance(record.get("start"), dict):
                    found = record["start"]
    except FileNotFoundError:
        return None
    return found


def describe_run(path: Path) -> dict[str, Any]:
    from bigembed.checkpoint import read_current, read_manifest
    from bigembed.checkpoint.run import read_evals, read_run_config
    from bigembed.checkpoint.versions import committed_versions

    saved = read_run_config(path)
    config = saved["config"]
    current = read_current(path)
    facts: dict[str, Any] = {
        "kind": "RUN",
        "path": str(path),
        "data": saved["data"]["path"],
        "nodes": sum(saved["data"]["entity_counts"]),
        "partitions": len(saved["data"]["entity_counts"]),
        "dim": config["model"]["dim"],
        "operator": config["model"]["operator"],
        "storage": config["training"].get("storage_dtype", "float32"),
        "epochs planned": config["training"]["epochs"],
    }
    if current is None:
        facts["last version"] = None
    else:
        manifest = read_manifest(path, current)
        P = len(saved["data"]["entity_counts"])
        facts["last version"] = f"v{current}"
        facts["epochs done"] = manifest.position.epoch
        facts["finished"] = manifest.position.epoch >= config["training"]["epochs"]
        if not facts["finished"]:
            visits = P * P * int(config["training"].get("edge_chunks", 1))  # edge_chunks passes an epoch
            slab = f", from slab {manifest.position.slab + 1}" if manifest.position.slab else ""
            facts["next bucket"] = (f"{manifest.position.bucket + 1} of {visits} in epoch "
                                    f"{manifest.position.epoch + 1}{slab}")
    facts["last epoch trained"] = last_epoch_stats(path / "stats.jsonl")
    start = last_start(path / "stats.jsonl")
    if start is not None and "kernels" in start:
        facts["kernels"] = (f"{start['kernels']}, ranking gradients {start.get('ranking_gradients', 'auto')} "
                            f"({start.get('kernels_why', '')})")
    evals = read_evals(path)
    if evals["best"]:
        best = evals["best"]
        facts["best validation"] = {"split": best["split"], "mrr": round(best["mrr"], 4),
                                    "epoch": best["epoch"], "version": f"v{best['version']}"}
        if evals.get("early_stopped"):
            facts["stopped early"] = True
    facts["versions on disk"] = [f"v{v}" for v in committed_versions(path)]
    facts["size on disk"] = human(_disk_bytes(path))
    return facts


def describe(path: Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_dir():
        raise BigembedError(f"{path}: no such directory (expected a DATA or RUN directory)")
    if (path / "config.json").exists():
        return describe_run(path)
    if (path / "manifest.json").exists():
        return describe_data(path)
    raise BigembedError(f"{path}: neither a DATA directory (manifest.json) nor a RUN directory (config.json)")
