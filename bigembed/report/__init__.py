"""`bigembed report`: a training report of a RUN, one self-contained HTML page and a few lines of text.

It reads only what the run wrote (``config.json``, ``stats.jsonl``, ``evals.json``, ``CURRENT``)
and, when it is there, the DATA the run was trained on (for edge counts and degrees, streamed
from the bucket files). Example::

    report = build_report(Path("RUN"))          # the DATA recorded in RUN/config.json, if present
    lines = summary_lines(report, Path("RUN/report.html"))
    write_report(report, Path("RUN/report.html"), lines)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bigembed.checkpoint import check_same_data, read_current, read_evals, read_run_config
from bigembed.errors import BigembedError, CheckpointError
from bigembed.report.data_summary import DataSummary, summarise_data
from bigembed.report.stats import EpochFigures, RunStats, read_stats
from bigembed.scheduler.memory import human
from bigembed.storage.atomic import atomic_write_bytes
from bigembed.storage.data_manifest import read_data_manifest

__all__ = ["TrainingReport", "build_report", "summary_lines", "write_report"]


@dataclass
class TrainingReport:
    run: Path
    saved: dict[str, Any]  # config.json: {"config": ..., "data": fingerprint}
    stats: RunStats
    epochs: list[EpochFigures]
    best: dict[str, Any] | None  # the best validation record
    current: int | None  # the version CURRENT names
    data: DataSummary | None
    data_note: str | None = None  # why there is no data summary
    notes: list[str] = field(default_factory=list)


def _open_data(run: Path, saved: dict[str, Any], data: Path | None) -> tuple[DataSummary | None, str | None]:
    """The data summary, or why there is none. An explicit ``data`` must be the RUN's (as eval's)."""
    path = Path(data) if data is not None else Path(saved["data"]["path"])
    if data is None and not (path / "manifest.json").is_file():
        return None, f"DATA was not found at {path} (pass --data if it moved)"
    dm = read_data_manifest(path)
    if data is None:
        try:
            check_same_data(run, saved, dm)
        except BigembedError as exc:
            return None, f"DATA at {path} is not the one this RUN was trained on ({exc}); pass --data"
    else:
        check_same_data(run, saved, dm)
    return summarise_data(dm), None


def build_report(run: Path, data: Path | None = None) -> TrainingReport:
    """Everything the report shows. Raises :class:`CheckpointError` when ``run`` is not a RUN."""
    run = Path(run)
    saved = read_run_config(run)
    stats = read_stats(run)
    epochs = stats.epochs()
    notes = []
    try:
        current = read_current(run)
    except CheckpointError as exc:
        current = None
        notes.append(f"checkpoints: {exc}")
    history = [e.validation for e in epochs if e.validation is not None]
    best = read_evals(run).get("best") or (max(history, key=lambda r: r["mrr"]) if history else None)
    if stats.ranks > 1:
        notes.append(f"{stats.ranks} ranks trained this run: training and io wait seconds add up every rank's "
                     "time; wall time, commits and partition loads are not recorded per epoch")
    data_summary, data_note = _open_data(run, saved, data)
    return TrainingReport(run, saved, stats, epochs, best, current, data_summary, data_note, notes)


def summary_lines(report: TrainingReport, html: Path) -> list[str]:
    """A few "what: figures" lines: epochs, edges, time, loss, validation, time split, memory."""
    epochs = report.epochs
    lines = [f"run: {report.run} (CURRENT v{report.current})" if report.current is not None else f"run: {report.run}"]
    if not epochs:
        lines.append("epochs: no epochs trained yet")
        lines.append(f"report: {html}")
        return lines
    edges = sum(e.edges for e in epochs)
    train_s = sum(e.train_s for e in epochs)
    lines.append(f"epochs: {len(epochs)} trained, {edges:,} edges")
    walls = [e.wall_s for e in epochs if e.wall_s is not None]
    mean_time = f"mean epoch {sum(walls) / len(walls):.2f} s wall, " if walls else ""
    lines.append(f"speed: {mean_time}{edges / max(train_s, 1e-9):,.0f} edges/s of training")
    lines.append(f"loss: {epochs[-1].mean_loss:.4f} in epoch {epochs[-1].epoch} (first {epochs[0].mean_loss:.4f})")
    if report.best is not None:
        b = report.best
        lines.append(f"best validation: MRR {b['mrr']:.4f} at epoch {b['epoch']} (v{b['version']}, "
                     f"{b.get('split', 'valid')})")
    io = sum(e.io_wait_s for e in epochs)
    commit = sum(e.commit_s or 0.0 for e in epochs)
    total = sum(walls) if len(walls) == len(epochs) else train_s + io + commit
    other = max(0.0, total - train_s - io - commit)
    lines.append(f"time: {total:.1f} s = training {train_s:.1f} s ({_share(train_s, total)}), waiting for "
                 f"partitions {io:.1f} s ({_share(io, total)}), committing {commit:.1f} s ({_share(commit, total)}), "
                 f"other {other:.1f} s")
    peaks = [e.max_rss_bytes for e in epochs if e.max_rss_bytes is not None]
    lines.append(f"peak RSS: {human(max(peaks))}" if peaks else "peak RSS: not recorded by this run")
    lines.append(f"report: {html}")
    return lines


def _share(part: float, total: float) -> str:
    return f"{100 * part / total:.0f}%" if total > 0 else "-"


def write_report(report: TrainingReport, out: Path, lines: list[str]) -> None:
    """Write the HTML page to ``out`` (atomically: a temp name, fsync, rename)."""
    from bigembed.report.page import render_page

    out = Path(out)
    if out.parent and not out.parent.is_dir():
        raise BigembedError(f"{out}: its folder {out.parent} does not exist")
    atomic_write_bytes(out, render_page(report, lines).encode("utf-8"))
