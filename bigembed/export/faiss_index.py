"""``bigembed export --format faiss``: a FAISS index per entity type for fast neighbour queries.

FAISS (the optional ``faiss-cpu`` package, ``pip install 'bigembed[faiss]'``) searches in C
with BLAS; the default ``Flat`` index is exact (the same answers as the streamed brute force,
``bigembed neighbors`` without ``--index``) and holds the vectors in memory; an index factory
string such as ``IVF4096,PQ32`` trades exactness for memory and speed (trained on a sample of
at most ``TRAIN_SAMPLE`` rows).

The comparator decides the metric: dot → inner product; cos → inner product of unit
vectors (the rows are normalised before they are added, queries likewise); l2 and
squared_l2 → Euclidean (FAISS returns squared distances; scores are their negatives, or
the negatives of their square roots for l2, as the model scores).

Files: ``index[_<type>].faiss``, ``names[_<type>].txt`` (row order) and ``faiss.json``
(the version, comparator, factory and row counts, checked when the index is used).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bigembed.errors import BigembedError

TRAIN_SAMPLE = 262144
FAISS_FORMAT = "bigembed-faiss"
METRICS = {"dot": "ip", "cos": "ip", "l2": "l2", "squared_l2": "l2"}


def import_faiss() -> Any:
    try:
        import faiss
    except ImportError:
        raise BigembedError("FAISS is not installed: pip install 'bigembed[faiss]' (the faiss-cpu package)") from None
    return faiss


def prepare(rows: np.ndarray, comparator: str) -> np.ndarray:
    """Rows as FAISS takes them: contiguous float32, unit length for the cos comparator."""
    rows = np.ascontiguousarray(rows, dtype=np.float32)
    if comparator == "cos":
        norms = np.linalg.norm(rows, axis=1, keepdims=True)
        rows = rows / np.maximum(norms, 1e-12)
    return rows


def to_scores(distances: np.ndarray, comparator: str) -> np.ndarray:
    """FAISS's distances as the model's scores (higher is nearer)."""
    if comparator == "l2":
        return -np.sqrt(np.maximum(distances, 0.0))
    if comparator == "squared_l2":
        return -distances
    return distances


def write_faiss(rows_of: Callable[[int, int], np.ndarray], names_of: Callable[[int, int], list[str]],
                type_names: list[str], counts: list[list[int]], typed: bool, dim: int, comparator: str,
                factory: str, version: int, out: Path, progress: Callable[[int], None] | None) -> None:
    """Build and write one index per entity type. ``rows_of(t, p)``: type t's float32 rows of
    partition p; ``names_of(t, p)``: their names; ``counts[t][p]``: how many."""
    faiss = import_faiss()
    if comparator not in METRICS:
        raise BigembedError(f"model.comparator = {comparator}: no FAISS metric for it")
    metric = faiss.METRIC_INNER_PRODUCT if METRICS[comparator] == "ip" else faiss.METRIC_L2
    meta: dict[str, Any] = {"format": FAISS_FORMAT, "format_version": 1, "version": version,
                            "comparator": comparator, "factory": factory, "dim": dim, "types": {}}
    P = len(counts[0]) if counts else 0
    for t, name in enumerate(type_names):
        suffix = f"_{name}" if typed else ""
        try:
            index = faiss.index_factory(dim, factory, metric)
        except RuntimeError as exc:
            raise BigembedError(f"--faiss-index {factory!r}: FAISS cannot build it ({str(exc).splitlines()[0]})") \
                from None
        total = sum(counts[t])
        if not index.is_trained:
            step = max(1, total // TRAIN_SAMPLE)
            sample = np.concatenate([prepare(rows_of(t, p), comparator)[::step] for p in range(P)])
            index.train(sample)
            del sample
        with open(out / f"names{suffix}.txt", "w") as names_out:
            for p in range(P):
                index.add(prepare(rows_of(t, p), comparator))
                names = names_of(t, p)
                names_out.write("".join(n + "\n" for n in names))
                if progress:
                    progress(len(names))
        faiss.write_index(index, str(out / f"index{suffix}.faiss"))
        meta["types"][name] = {"index": f"index{suffix}.faiss", "names": f"names{suffix}.txt", "rows": total}
        del index
    (out / "faiss.json").write_text(json.dumps(meta, indent=2))


def read_faiss_meta(folder: Path) -> dict[str, Any]:
    path = folder / "faiss.json"
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        raise BigembedError(f"{path}: missing; is {folder} the output of `bigembed export --format faiss`?") from None
    except (OSError, ValueError) as exc:
        raise BigembedError(f"{path}: unreadable ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FAISS_FORMAT:
        raise BigembedError(f"{path}: not a bigembed FAISS export")
    return meta
