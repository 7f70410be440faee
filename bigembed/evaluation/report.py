"""Opening a RUN's checkpoint for evaluation and printing metrics for people."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bigembed.checkpoint import VersionManifest, read_current, read_manifest
from bigembed.checkpoint.run import check_same_data, read_run_config
from bigembed.config import Config, build_config, flatten
from bigembed.errors import BigembedError
from bigembed.storage.data_manifest import DataManifest, read_data_manifest


def open_run_checkpoint(run: Path, data: Path) -> tuple[VersionManifest, DataManifest, Config]:
    """The RUN's last committed version, the DATA (checked to be the RUN's) and the RUN's config."""
    saved = read_run_config(run)
    dm = read_data_manifest(data)
    check_same_data(run, saved, dm)
    version = read_current(run)
    if version is None:
        raise BigembedError(f"{run}/CURRENT: missing; this RUN has no committed checkpoint")
    return read_manifest(run, version), dm, build_config(flatten(saved["config"]))


def _line(m: dict[str, Any]) -> str:
    return (f"MRR {m['mrr']:.4f}  Hits@1 {m['hits@1']:.4f}  Hits@3 {m['hits@3']:.4f}  "
            f"Hits@10 {m['hits@10']:.4f}  mean rank {m['mean_rank']:.1f}")


def format_metrics(metrics: dict[str, Any]) -> str:
    """A few lines: the protocol, the mean of both directions, then each direction (and relation)."""
    lines = [
        f"{metrics['split']}: {metrics['count']} edges, v{metrics['version']} ({metrics['epochs_done']} epochs)",
        f"protocol: {metrics['protocol']}",
        f"  both  {_line(metrics)}",
        f"  rhs   {_line(metrics['rhs'])}",
        f"  lhs   {_line(metrics['lhs'])}",
    ]
    for name, m in metrics.get("relations", {}).items():
        lines.append(f"  {name} ({m['count']} edges): {_line(m)}")
    return "\n".join(lines)
