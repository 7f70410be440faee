"""Progress: tqdm bars with rate and ETA on a terminal; elsewhere (nohup, a batch scheduler,
CI) a plain line every :data:`PLAIN_EVERY` seconds with the same facts."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO

from tqdm import tqdm

PLAIN_EVERY = 60.0  # seconds between plain progress lines off a terminal (0: none); `train --log-every`
# -1: `-q` (errors and result lines only), 0: the default, 1: `-v` (detail lines too); set by the CLI.
VERBOSITY = 0


def detail(message: str) -> None:
    """A ``-v`` line (per-bucket numbers), above any progress bar; nothing unless :data:`VERBOSITY` > 0."""
    if VERBOSITY > 0:
        tqdm.write(message, file=sys.stderr)


class PlainProgress:
    """What a tqdm bar offers the trainers (``update``, ``set_postfix``, ``write``, ``n``),
    printed as a plain line at most every ``every`` seconds: ``epoch 2/20: 41% (1.4M/3.4M
    edges), 35.2k edges/s, ETA 0:57, bucket 3/4, loss 0.4210``."""

    disable = False

    def __init__(self, total: int | None, desc: str, unit: str, initial: int, every: float) -> None:
        self.total, self.desc, self.unit, self.every = total, desc, unit, every
        self.n = self._start_n = initial
        self._start = self._last = time.monotonic()
        self._postfix = ""

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if self.every > 0 and now - self._last >= self.every:
            self._last = now
            sys.stderr.write(self.line(now) + "\n")
            sys.stderr.flush()

    def line(self, now: float) -> str:
        rate = (self.n - self._start_n) / max(now - self._start, 1e-9)
        done = f"{tqdm.format_sizeof(self.n)}"
        if self.total:
            eta = tqdm.format_interval((self.total - self.n) / rate) if rate > 0 else "?"
            done = f"{100 * self.n / self.total:.0f}% ({done}/{tqdm.format_sizeof(self.total)} {self.unit}s), ETA {eta}"
        return f"{self.desc}: {done}, {tqdm.format_sizeof(rate)} {self.unit}s/s{self._postfix}"

    def set_postfix(self, **values: Any) -> None:
        self._postfix = "".join(f", {k} {v}" for k, v in values.items())

    def write(self, message: str, file: TextIO | None = None) -> None:
        print(message, file=file or sys.stderr)

    def close(self) -> None:
        """Nothing to clear: the lines stay as printed."""


def plural(count: int, word: str) -> str:
    """``1 partition``, ``4 partitions``: a count and its noun, as people write them."""
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


@contextmanager
def progress_bar(total: int | None, desc: str, unit: str, show: bool, initial: int = 0) -> Iterator[Any]:
    """A tqdm bar on stderr when it is a terminal, else a :class:`PlainProgress` (a line every
    :data:`PLAIN_EVERY` seconds); ``show=False`` hides both."""
    if show and not sys.stderr.isatty() and PLAIN_EVERY > 0:
        yield PlainProgress(total, desc, unit, initial, PLAIN_EVERY)
        return
    bar = tqdm(
        total=total,
        desc=desc,
        unit=unit,
        unit_scale=True,
        initial=initial,
        disable=(not show) or not sys.stderr.isatty(),
        dynamic_ncols=True,
        leave=True,
    )
    try:
        yield bar
    finally:
        bar.close()
