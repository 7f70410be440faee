"""The training report's plots, as ``data:image/png;base64`` URIs (matplotlib, optional).

matplotlib is imported here only, lazily, through its object API and the Agg canvas: no
pyplot, so no global backend or figure state is touched in the caller's process. Without
matplotlib, :func:`plotter` returns None and the page has its tables only.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from bigembed.report.stats import EpochFigures

INSTALL_HINT = "pip install 'bigembed[report]' adds plots"
Figure = Any  # matplotlib.figure.Figure, imported lazily
Plot = Callable[[Figure], None]


def plotter() -> Callable[[Plot, tuple[float, float]], str] | None:
    """A function drawing one figure into a PNG data URI, or None without matplotlib."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure as MplFigure
    except ImportError:
        return None

    def draw(plot: Plot, size: tuple[float, float] = (5.9, 3.0)) -> str:
        figure = MplFigure(figsize=size, dpi=90, layout="constrained")
        FigureCanvasAgg(figure)
        plot(figure)
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png")
        return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")

    return draw


def _integer_epochs(ax: Any) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _epoch_marks(ax: Any, starts: Sequence[int]) -> None:
    for x in starts[1:]:
        ax.axvline(x - 0.5, color="#bbb", linewidth=0.6, zorder=0)


def loss_plot(buckets: list[dict[str, Any]], epochs: list[EpochFigures]) -> Plot:
    """Each bucket's mean loss in the order trained, and each epoch's mean (a step)."""
    return _by_bucket(buckets, epochs, "loss", "mean loss per edge", lambda e: e.mean_loss)


def rate_plot(buckets: list[dict[str, Any]], epochs: list[EpochFigures]) -> Plot:
    return _by_bucket(buckets, epochs, "edges_per_s", "edges / s (training)", lambda e: e.edges_per_s)


def _by_bucket(buckets: list[dict[str, Any]], epochs: list[EpochFigures], key: str, label: str,
               per_epoch: Callable[[EpochFigures], float]) -> Plot:
    def plot(figure: Figure) -> None:
        ax = figure.add_subplot()
        values = [float(b.get(key, 0.0)) for b in buckets]
        ax.plot(range(len(values)), values, ".", markersize=3, color="#4c72b0", label="bucket")
        starts, x = [], 0
        for e in epochs:
            starts.append(x)
            ax.hlines(per_epoch(e), x - 0.5, x + e.buckets - 0.5, color="#dd8452", linewidth=2,
                      label="epoch" if x == 0 else None)
            x += e.buckets
        _epoch_marks(ax, starts)
        ax.set_xlabel("bucket visits in the order trained (grey lines: epochs)")
        ax.set_ylabel(label)
        ax.legend(loc="best", fontsize="small")

    return plot


def validation_plot(epochs: list[EpochFigures]) -> Plot:
    def plot(figure: Figure) -> None:
        ax = figure.add_subplot()
        done = [e for e in epochs if e.validation is not None]
        xs = [e.epoch for e in done]
        for key, style in (("mrr", "o-"), ("hits@1", "s--"), ("hits@3", "^--"), ("hits@10", "v--")):
            ax.plot(xs, [e.validation[key] for e in done if e.validation], style, label=key.upper()
                    if key == "mrr" else key.capitalize(), markersize=4)
        ax.set_xlabel("epoch")
        ax.set_ylabel("filtered, validation split")
        _integer_epochs(ax)
        ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=4, fontsize="small", frameon=False)

    return plot


def time_plot(epochs: list[EpochFigures]) -> Plot:
    """Stacked bars per epoch: training, waiting for partitions, committing, the rest of the wall time."""
    def plot(figure: Figure) -> None:
        ax = figure.add_subplot()
        xs = np.array([e.epoch for e in epochs])
        bottom = np.zeros(len(epochs))
        parts = [("training", [e.train_s for e in epochs], "#4c72b0"),
                 ("waiting for partitions", [e.io_wait_s for e in epochs], "#dd8452"),
                 ("committing", [e.commit_s or 0.0 for e in epochs], "#55a868"),
                 ("other", [max(0.0, (e.wall_s or 0.0) - e.train_s - e.io_wait_s - (e.commit_s or 0.0))
                            for e in epochs], "#bbbbbb")]
        for label, values, colour in parts:
            ax.bar(xs, values, bottom=bottom, label=label, color=colour)
            bottom += np.array(values)
        ax.set_xlabel("epoch")
        ax.set_ylabel("seconds")
        _integer_epochs(ax)
        ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=4, fontsize="small", frameon=False)

    return plot


def per_epoch_plot(epochs: list[EpochFigures], value: Callable[[EpochFigures], float | None], label: str,
                   bars: bool = True) -> Plot:
    def plot(figure: Figure) -> None:
        ax = figure.add_subplot()
        known = [(e.epoch, value(e)) for e in epochs if value(e) is not None]
        xs, ys = [x for x, _ in known], [y for _, y in known]
        if bars:
            ax.bar(xs, ys, color="#4c72b0")
        else:
            ax.plot(xs, ys, "o-", color="#4c72b0", markersize=4)
            ax.set_ylim(bottom=0)
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        _integer_epochs(ax)

    return plot


def degree_plot(degree_counts: np.ndarray) -> Plot:
    """Nodes per degree on log-log axes (degree 0 cannot be drawn there; the page gives it)."""
    def plot(figure: Figure) -> None:
        ax = figure.add_subplot()
        degrees = np.nonzero(degree_counts)[0]
        degrees = degrees[degrees > 0]
        ax.loglog(degrees, degree_counts[degrees], ".", markersize=4, color="#4c72b0")
        ax.set_xlabel("degree (training edges, in + out)")
        ax.set_ylabel("nodes")

    return plot
