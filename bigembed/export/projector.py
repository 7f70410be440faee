"""Export for the TensorBoard Embedding Projector: a uniform random sample of the nodes.

- ``OUT/vectors.tsv``: one row of D tab-separated floats per sampled node, no header.
- ``OUT/metadata.tsv``: the sampled nodes' names in the same order; with several entity
  types a header ``name<TAB>type`` and two columns, else one column and no header (what
  the projector expects of one and of several columns).
- ``OUT/projector_config.pbtxt``: points at both, so ``tensorboard --logdir OUT`` shows them
  and projector.tensorflow.org's "Load" takes the two TSV files.

Policy: the sample is ``n`` row numbers drawn without replacement from ``0..N-1`` (all rows of
all types, in export order: type, then partition, then offset) by a seeded generator, then
read while the partitions stream past, one at a time. Memory: the ``n`` row numbers and one
partition's rows. Every node is equally likely; the same seed gives the same sample.

    rows = sample_rows(1_000_000, 10_000, seed=0)   # sorted, unique, (10000,) int64
    write_projector(run, manifest, data, out, 10_000, seed=0, progress=None)
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import numpy as np

from bigembed.checkpoint import VersionManifest, read_globals
from bigembed.export.writers import partition_names, type_rows
from bigembed.storage.data_manifest import DataManifest

DEFAULT_SAMPLE = 10_000
TENSOR_NAME = "bigembed"


def sample_rows(total: int, n: int, seed: int) -> np.ndarray:
    """``min(n, total)`` distinct row numbers out of ``range(total)``, sorted: (k,) int64."""
    if n >= total:
        return np.arange(total, dtype=np.int64)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(total, size=n, replace=False).astype(np.int64))


def _metadata_name(name: str) -> str:
    """A name as one TSV field: tabs and line breaks (possible with --delimiter ,) become spaces."""
    return name.replace("\t", " ").replace("\r", " ").replace("\n", " ")


def _format_rows(rows: np.ndarray) -> str:
    buf = io.StringIO()
    np.savetxt(buf, rows, fmt="%.7g", delimiter="\t")
    return buf.getvalue()


def projector_config(tensor_path: str = "vectors.tsv", metadata_path: str = "metadata.tsv") -> str:
    """The ``projector_config.pbtxt`` text naming the tensor and metadata files (relative to OUT)."""
    return (f'embeddings {{\n  tensor_name: "{TENSOR_NAME}"\n  tensor_path: "{tensor_path}"\n'
            f'  metadata_path: "{metadata_path}"\n}}\n')


def write_projector(run: Path, manifest: VersionManifest, data: DataManifest, out: Path, n: int, seed: int,
                    progress: Callable[[int], None] | None) -> int:
    """Write the projector files for a sample of ``n`` nodes into ``out``; returns the rows written."""
    rows = sample_rows(data.num_entities, n, seed)
    globals_ = read_globals(run, manifest)
    start = 0  # row number of the current partition's first row, in export order
    with open(out / "vectors.tsv", "w") as vectors, open(out / "metadata.tsv", "w") as metadata:
        if data.typed:
            metadata.write("name\ttype\n")
        for t, etype in enumerate(data.entity_types):
            for p, count in enumerate(etype.counts):
                lo, hi = np.searchsorted(rows, [start, start + count])
                if hi > lo:
                    picked = rows[lo:hi] - start
                    vectors.write(_format_rows(type_rows(run, manifest, data, t, p, globals_)[picked]))
                    metadata.write(_picked_names(data, p, t, picked, etype.name if data.typed else None))
                start += count
                if progress:
                    progress(count)
    (out / "projector_config.pbtxt").write_text(projector_config())
    return len(rows)


def _picked_names(data: DataManifest, partition: int, t: int, picked: np.ndarray, type_name: str | None) -> str:
    """Metadata lines of the rows ``picked`` (sorted offsets) of type ``t`` in ``partition``."""
    lines = []
    offset, i = 0, 0
    for names in partition_names(data, partition, t):
        while i < len(picked) and picked[i] < offset + len(names):
            name = _metadata_name(names[int(picked[i]) - offset])
            lines.append(f"{name}\t{type_name}\n" if type_name is not None else f"{name}\n")
            i += 1
        offset += len(names)
    return "".join(lines)
