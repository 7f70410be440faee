"""Progress bars with rate and ETA (tqdm), shown only on a terminal unless forced."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

from tqdm import tqdm


@contextmanager
def progress_bar(total: int | None, desc: str, unit: str, show: bool, initial: int = 0) -> Iterator[tqdm]:
    """A tqdm bar on stderr; ``show=False`` or a non-terminal stderr hides it."""
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
