"""Opening a RUN's checkpoint for evaluation and printing metrics for people."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from bigembed.checkpoint import (
    VersionManifest,
    check_position,
    check_same_data,
    committed_versions,
    pin_version,
    read_current,
    read_evals,
    read_manifest,
    read_run_config,
)
from bigembed.config import Config, build_config, flatten
from bigembed.errors import BigembedError, CheckpointError
from bigembed.storage.data_manifest import DataManifest, read_data_manifest


def _which_version(run: Path, which: str) -> int:
    """``which``: ``last`` (CURRENT), ``best`` (best on the validation split) or ``vN``/``N``."""
    if which == "last":
        try:
            version = read_current(run)
        except CheckpointError as exc:
            raise CheckpointError(f"{exc}; `bigembed train` repairs it, or pass --version vN "
                                  f"(committed: {_listing(run)})") from None
        if version is None:
            raise BigembedError(f"{run}/CURRENT: missing; this RUN has no committed checkpoint "
                                f"(committed: {_listing(run)})")
        return version
    if which == "best":
        best = read_evals(run).get("best")
        if not best:
            raise BigembedError(f"{run}: no validation results (train with training.eval_every > 0 to have a best)")
        return int(best["version"])
    try:
        return int(which.removeprefix("v"))
    except ValueError:
        raise BigembedError(f"--version {which!r}: expected last, best, or a version such as v3") from None


def _listing(run: Path) -> str:
    return ", ".join(f"v{v}" for v in committed_versions(run)) or "none"


def resolve_version(run: Path, which: str = "last") -> VersionManifest:
    """The manifest of version ``which`` of ``run`` (see :func:`_which_version`), unpinned."""
    return read_manifest(run, _which_version(run, which))


@contextmanager
def opened_checkpoint(run: Path, data: Path | None, which: str = "last"
                      ) -> Iterator[tuple[VersionManifest, DataManifest, Config]]:
    """A committed version of RUN, pinned against garbage collection while the block reads it
    (a trainer may be committing beside the reader), the DATA (default: the one RUN was
    trained on; checked to be the RUN's) and the RUN's config."""
    saved = read_run_config(run)
    dm = read_data_manifest(data if data is not None else Path(saved["data"]["path"]))
    check_same_data(run, saved, dm)
    with ExitStack() as stack:
        for attempt in range(3):  # "last" may move on between reading CURRENT and pinning it
            version = _which_version(run, which)
            try:
                stack.enter_context(pin_version(run, version))
                break
            except CheckpointError:
                if which != "last" or attempt == 2:
                    raise
        manifest, config = read_manifest(run, version), build_config(flatten(saved["config"]))
        check_position(run, manifest, dm.num_partitions ** 2 * config.training.edge_chunks)
        yield manifest, dm, config


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
    if metrics.get("nonfinite_scores", 0) > 0:
        lines.append(f"warning: {metrics['nonfinite_scores']} scores were NaN or infinite (the model has "
                     "diverged?); each such true answer was ranked last, and a NaN candidate above its answer")
    return "\n".join(lines)
