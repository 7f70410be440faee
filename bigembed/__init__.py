"""bigembed: out-of-core, partitioned graph embeddings, PyTorch-BigGraph style.

From Python, open a trained RUN with :func:`bigembed.open_run` (see :mod:`bigembed.api`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Match", "Run", "__version__", "open_run"]

if TYPE_CHECKING:
    from bigembed.api import Match, Run, open_run


def __getattr__(name: str) -> Any:
    # The API pulls in torch: imported on first use, so that `bigembed --help` stays instant.
    if name in ("open_run", "Run", "Match"):
        from bigembed import api

        return getattr(api, name)
    raise AttributeError(f"module 'bigembed' has no attribute {name!r}")
