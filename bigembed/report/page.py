"""The training report as one self-contained HTML page: inline CSS, plots as PNG data URIs,
no script, font or stylesheet from elsewhere. The per-epoch figures are also embedded as JSON
(``<script type="application/json" id="bigembed-report">``) for programs that read the page."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Sequence
from html import escape
from typing import TYPE_CHECKING

from bigembed import __version__
from bigembed.config import flatten
from bigembed.report import plots
from bigembed.scheduler.memory import human

if TYPE_CHECKING:
    from bigembed.report import TrainingReport
    from bigembed.report.stats import EpochFigures

CSS = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; padding: 0 1em; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; border-bottom: 1px solid #ddd; margin-top: 2em; }
table { border-collapse: collapse; margin: 0.5em 0; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #ddd; padding: 2px 8px; text-align: right; } td { white-space: nowrap; }
th { background: #f4f4f4; } td.key, th.key { text-align: left; font-family: monospace; }
.note { background: #fff7e0; border-left: 4px solid #e0b000; padding: 4px 8px; margin: 0.5em 0; }
.plots { display: flex; flex-wrap: wrap; gap: 8px; } .plots figure { margin: 0; }
figcaption { font-size: 0.9em; color: #555; } dl { display: grid; grid-template-columns: max-content auto; }
dt { font-weight: 600; padding-right: 1em; } dd { margin: 0; }
"""

Cell = str | int | float | None


def fmt(value: Cell, digits: int = 2) -> str:
    """A table cell: "-" for unknown, thousands separators for integers."""
    if value is None:
        return "-"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def table(headers: Sequence[str], rows: Iterable[Sequence[str]], table_id: str = "", keys: int = 0) -> str:
    """An HTML table of already formatted cells; the first ``keys`` columns are left-aligned labels."""
    head = "".join(f'<th{" class=key" if i < keys else ""}>{escape(h)}</th>' for i, h in enumerate(headers))
    body = "".join("<tr>" + "".join(f'<td{" class=key" if i < keys else ""}>{escape(c)}</td>'
                                    for i, c in enumerate(row)) + "</tr>\n" for row in rows)
    ident = f' id="{table_id}"' if table_id else ""
    return f"<table{ident}><thead><tr>{head}</tr></thead><tbody>\n{body}</tbody></table>\n"


def epoch_rows(epochs: list[EpochFigures]) -> list[list[str]]:
    return [[fmt(e.epoch), fmt(e.buckets), fmt(e.edges), fmt(e.mean_loss, 4), fmt(e.train_s), fmt(e.io_wait_s),
             fmt(e.commit_s), fmt(e.wall_s), fmt(e.edges_per_s, 0), fmt(e.loads), fmt(e.prefetched),
             "-" if e.max_rss_bytes is None else human(e.max_rss_bytes),
             "-" if e.validation is None else fmt(float(e.validation["mrr"]), 4)] for e in epochs]


EPOCH_HEADERS = ["epoch", "bucket visits", "edges", "mean loss", "training s", "io wait s", "commit s", "wall s",
                 "edges/s training", "partition loads", "prefetched", "peak RSS", "valid MRR"]


def _figure(draw: Callable[..., str] | None, plot: plots.Plot, caption: str) -> str:
    if draw is None:
        return ""
    label = escape(caption)
    return f'<figure><img alt="{label}" src="{draw(plot)}"><figcaption>{label}</figcaption></figure>'


def _training_section(report: TrainingReport, draw: Callable[..., str] | None) -> str:
    epochs = report.epochs
    if not epochs:
        return "<h2>Training</h2><p class=note>no epochs trained yet</p>\n"
    parts = ["<h2>Training by epoch</h2>",
             "<p>Training s: the buckets' training time; io wait s: waiting for partitions to load; commit s: "
             "writing checkpoints; wall s: the epoch from its first bucket to its commit (validation not "
             "included); edges/s training: edges per second of training time (the training log's rate is per "
             "wall second); peak RSS: the training process's peak resident memory so far. "
             "'-': not recorded (runs before these records, or distributed runs).</p>",
             table(EPOCH_HEADERS, epoch_rows(epochs), "epochs")]
    buckets = report.stats.buckets
    parts.append('<div class="plots">')
    parts.append(_figure(draw, plots.loss_plot(buckets, epochs), "Loss by bucket (dots) and by epoch (bars)"))
    parts.append(_figure(draw, plots.rate_plot(buckets, epochs), "Edges per second by bucket and epoch"))
    parts.append(_figure(draw, plots.time_plot(epochs), "Where each epoch's time went"))
    if any(e.loads is not None for e in epochs):
        parts.append(_figure(draw, plots.per_epoch_plot(epochs, lambda e: e.loads, "partition loads"),
                             "Partition loads per epoch"))
    if any(e.max_rss_bytes is not None for e in epochs):
        parts.append(_figure(draw, plots.per_epoch_plot(
            epochs, lambda e: None if e.max_rss_bytes is None else e.max_rss_bytes / 2**20, "MiB", bars=False),
            "Peak resident memory (RSS) at the end of each epoch"))
    parts.append("</div>")
    return "\n".join(parts)


def _validation_section(report: TrainingReport, draw: Callable[..., str] | None) -> str:
    done = [e for e in report.epochs if e.validation is not None]
    if not done:
        return ("<h2>Validation</h2><p>This run did not validate during training "
                "(set training.eval_every to rank the validation split every N epochs).</p>\n")
    rows = [[fmt(e.epoch), f"v{e.validation['version']}", e.validation.get("split", "?"),
             fmt(float(e.validation["mrr"]), 4)]
            + [fmt(float(e.validation[k]), 4) if k in e.validation else "-" for k in ("hits@1", "hits@3", "hits@10")]
            + [fmt(float(e.validation["mean_rank"]), 1) if "mean_rank" in e.validation else "-",
               fmt(float(e.validation["seconds"])) if "seconds" in e.validation else "-"]
            for e in done if e.validation is not None]
    best = report.best
    note = "" if best is None else (f"<p>Best: MRR {best['mrr']:.4f} at epoch {best['epoch']} "
                                    f"(v{best['version']}; eval and export take it with --version best).</p>")
    return ("<h2>Validation (filtered ranking)</h2>" + note
            + table(["epoch", "version", "split", "MRR", "Hits@1", "Hits@3", "Hits@10", "mean rank", "seconds"],
                    rows, "validation")
            + '<div class="plots">' + _figure(draw, plots.validation_plot(report.epochs), "Validation by epoch")
            + "</div>\n")


def _data_section(report: TrainingReport, draw: Callable[..., str] | None) -> str:
    fp = report.saved["data"]
    parts = [f"<h2>Data</h2><p>Trained on <code>{escape(str(fp.get('path')))}</code>.</p>"]
    entities = fp.get("entities") or {"node": fp.get("entity_counts", [])}
    parts.append(table(["entity type", "nodes"] + [f"partition {i}" for i in range(len(fp.get("entity_counts", [])))],
                       [[name, fmt(sum(counts))] + [fmt(c) for c in counts] for name, counts in entities.items()],
                       "nodes", keys=1))
    summary = report.data
    if summary is None:
        parts.append(f"<p class=note>{escape(report.data_note or 'DATA was not found')}: edge counts and degrees "
                     "need it.</p>")
        parts.append(table(["relation"], [[r] for r in fp.get("relations", [])], "relations", keys=1))
        return "\n".join(parts)
    splits = sorted(summary.relation_edges, key=lambda s: (s != "train", s))
    rows = [[name] + [fmt(summary.relation_edges[s][i]) for s in splits] for i, name in enumerate(summary.relations)]
    rows.append(["all"] + [fmt(sum(summary.relation_edges[s])) for s in splits])
    parts.append(table(["relation"] + [f"{s} edges" for s in splits], rows, "relations", keys=1))
    degrees = summary.degree_counts
    mean = float((degrees * range(degrees.size)).sum()) / max(1, summary.nodes)
    parts.append(f"<p>Degrees over the training edges (in + out): mean {mean:.2f}, largest {summary.max_degree:,}, "
                 f"{summary.isolated:,} node(s) without a training edge (not on the log-log plot).</p>")
    parts.append('<div class="plots">' + _figure(draw, plots.degree_plot(degrees), "Degree distribution (log-log)")
                 + "</div>")
    return "\n".join(parts)


def _config_section(report: TrainingReport) -> str:
    flat = flatten(report.saved["config"])
    rows = [[key, json.dumps(value)] for key, value in sorted(flat.items())]
    return "<h2>Config</h2>" + table(["key", "value"], rows, "config", keys=2)


def render_page(report: TrainingReport, summary_lines: list[str]) -> str:
    draw = plots.plotter()
    notes = [f"stats.jsonl: skipped damaged line {d}" for d in report.stats.damaged[:20]]
    if len(report.stats.damaged) > 20:
        notes.append(f"... and {len(report.stats.damaged) - 20} more damaged lines")
    notes += report.notes
    if draw is None:
        notes.append(plots.INSTALL_HINT)
    embedded = json.dumps({"epochs": [e.as_row() for e in report.epochs], "summary": summary_lines,
                           "damaged": report.stats.damaged}).replace("</", "<\\/")
    body = "\n".join([
        f"<h1>bigembed training report: {escape(report.run.name or str(report.run))}</h1>",
        f"<p><code>{escape(str(report.run))}</code>, written {time.strftime('%Y-%m-%d %H:%M:%S')} by bigembed "
        f"{__version__}</p>",
        "".join(f"<p class=note>{escape(n)}</p>" for n in notes),
        "<h2>Summary</h2><dl>" + "".join(f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>"
                                         for k, v in (line.split(": ", 1) for line in summary_lines)) + "</dl>",
        _training_section(report, draw),
        _validation_section(report, draw),
        _data_section(report, draw),
        _config_section(report),
        f'<script type="application/json" id="bigembed-report">{embedded}</script>',
    ])
    return (f"<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8><title>bigembed report: "
            f"{escape(str(report.run))}</title><style>{CSS}</style></head><body>\n{body}\n</body></html>\n")
