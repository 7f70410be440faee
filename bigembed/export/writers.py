"""Export formats: TSV, NumPy (.npy + names), HDF5 in PyTorch-BigGraph's checkpoint layout.

Every format is written one partition at a time (only one partition's rows are
ever in memory) into a temp folder that is renamed to OUT when complete.

- ``tsv``: ``OUT/embeddings.tsv``, lines ``name<TAB>v1<TAB>...<TAB>vD``; the relation files as for npy.
- ``npy``: ``OUT/embeddings.npy`` (N, D) float32 and ``OUT/names.txt`` in the same row order;
  ``relations.txt`` and ``relation_params.npy`` (when relations have parameters), which
  ``relations.json`` names (``names_file``, ``params_file``).

- ``parquet``: ``OUT/embeddings.parquet``, columns ``name`` (string) and ``embedding`` (a
  fixed-size list of D float32), one row group per 65,536 rows: pandas, polars and DuckDB
  each load it in one line, and the column's type does not depend on D.

With several entity types, tsv, npy and parquet write one set of files per type
(``embeddings_<type>.tsv``, ``embeddings_<type>.npy`` + ``names_<type>.txt``,
``embeddings_<type>.parquet``).
- ``h5``: PBG layout: ``embeddings_<entity>_<part>.v<N>.h5`` (dataset ``embeddings``,
  attr ``format_version``), ``entity_names_<entity>_<part>.json``,
  ``entity_count_<entity>_<part>.txt``, ``model.v<N>.h5`` and ``checkpoint_version.txt``.

With ``model.global_emb`` every format writes the rows with their type's global vector
added, so the exported vectors score exactly as the model does (PyTorch-BigGraph keeps
the vector apart, in ``model.v<N>.h5``; folded in, its readers need nothing extra).
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import h5py
import numpy as np

from bigembed.checkpoint import RELATION_PARAMS_KEY, VersionManifest, add_global, emb_key, read_globals, read_shard_of
from bigembed.errors import BigembedError
from bigembed.storage.atomic import atomic_output_dir, atomic_write_json
from bigembed.storage.data_manifest import DataManifest
from bigembed.storage.dtypes import to_float32
from bigembed.storage.names import iter_names, names_dir

FORMATS = ("tsv", "npy", "h5", "parquet", "faiss", "projector")  # projector: bigembed.export.projector
ROWS = 65536
Progress = Callable[[int], None]


def partition_names(data: DataManifest, partition: int, t: int = 0) -> Iterator[list[str]]:
    """Names of entity type ``t``'s rows in ``partition`` in offset order, a chunk at a time."""
    etype = data.entity_types[t]
    count = etype.counts[partition]
    if data.id_kind == "int":
        P = data.num_partitions
        for start in range(0, count, ROWS):
            stop = min(count, start + ROWS)
            yield [str(o * P + partition) for o in range(start, stop)]
    else:
        yield from iter_names(names_dir(data.path.parent, etype.name, partition), count, ROWS)


def type_rows(run: Path, manifest: VersionManifest, data: DataManifest, t: int,
               partition: int, globals_: np.ndarray | None) -> np.ndarray:
    """Type ``t``'s rows of ``partition`` as float32 (half-precision storage widened), with the
    type's global vector added (``model.global_emb``; ``globals_`` read once per export by
    :func:`~bigembed.checkpoint.read_globals`): vectors that score as the model does."""
    rows = to_float32(read_shard_of(run, manifest, emb_key(data.entity_types[t].name, partition)))
    return add_global(rows, globals_, data, partition, t)


def _suffix(data: DataManifest, t: int) -> str:
    """File name suffix of type ``t``'s outputs: none with one entity type (``embeddings.tsv``)."""
    return f"_{data.entity_types[t].name}" if data.typed else ""


def _write_tsv(run: Path, manifest: VersionManifest, data: DataManifest, out: Path, progress: Progress | None) -> None:
    globals_ = read_globals(run, manifest)
    for t in range(len(data.entity_types)):
        with open(out / f"embeddings{_suffix(data, t)}.tsv", "w") as handle:
            for p in range(data.num_partitions):
                emb = type_rows(run, manifest, data, t, p, globals_)
                start = 0
                for names in partition_names(data, p, t):
                    block = emb[start : start + len(names)]
                    buf = io.StringIO()
                    np.savetxt(buf, block, fmt="%.7g", delimiter="\t")
                    rows = buf.getvalue().splitlines()
                    handle.write("".join(f"{n}\t{r}\n" for n, r in zip(names, rows)))
                    start += len(names)
                    if progress:
                        progress(len(names))
    _write_relations(run, manifest, data, out)


def _write_npy(run: Path, manifest: VersionManifest, data: DataManifest, out: Path, dim: int,
               progress: Progress | None) -> None:
    globals_ = read_globals(run, manifest)
    # Header first, then each partition's rows appended: a plain sequential write, so
    # no page of the output stays mapped (a memmap's pages would count as resident).
    for t, etype in enumerate(data.entity_types):
        header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)), "fortran_order": False,
                  "shape": (etype.total, dim)}
        suffix = _suffix(data, t)
        with open(out / f"embeddings{suffix}.npy", "wb") as matrix, open(out / f"names{suffix}.txt", "w") as names_out:
            np.lib.format.write_array_header_1_0(matrix, header)
            for p in range(data.num_partitions):
                emb = type_rows(run, manifest, data, t, p, globals_)
                matrix.write(np.ascontiguousarray(emb, dtype=np.float32).data)
                del emb
                for names in partition_names(data, p, t):
                    names_out.write("".join(n + "\n" for n in names))
                    if progress:
                        progress(len(names))
    _write_relations(run, manifest, data, out)


def _write_parquet(run: Path, manifest: VersionManifest, data: DataManifest, out: Path, dim: int,
                   progress: Progress | None) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    globals_ = read_globals(run, manifest)
    schema = pa.schema([("name", pa.string()), ("embedding", pa.list_(pa.float32(), dim))])
    for t in range(len(data.entity_types)):
        with pq.ParquetWriter(out / f"embeddings{_suffix(data, t)}.parquet", schema) as writer:
            for p in range(data.num_partitions):
                emb = np.ascontiguousarray(type_rows(run, manifest, data, t, p, globals_), dtype=np.float32)
                start = 0
                for names in partition_names(data, p, t):
                    block = emb[start : start + len(names)]
                    vectors = pa.FixedSizeListArray.from_arrays(pa.array(block.reshape(-1), pa.float32()), dim)
                    writer.write_table(pa.Table.from_arrays([pa.array(names, pa.string()), vectors], schema=schema))
                    start += len(names)
                    if progress:
                        progress(len(names))
                del emb
    _write_relations(run, manifest, data, out)


def _write_faiss(run: Path, manifest: VersionManifest, data: DataManifest, out: Path, dim: int,
                 progress: Progress | None, comparator: str, factory: str) -> None:
    from bigembed.export.faiss_index import import_faiss, write_faiss

    import_faiss()  # before any work: one line if it is missing
    globals_ = read_globals(run, manifest)
    write_faiss(lambda t, p: type_rows(run, manifest, data, t, p, globals_),
                lambda t, p: [n for chunk in partition_names(data, p, t) for n in chunk],
                data.type_names, [t.counts for t in data.entity_types], data.typed, dim, comparator, factory,
                manifest.version, out, progress)
    _write_relations(run, manifest, data, out)


def _write_relations(run: Path, manifest: VersionManifest, data: DataManifest, out: Path) -> None:
    """``relations.txt`` (names in index order) and ``relation_params.npy`` (tsv, npy, parquet)."""
    (out / "relations.txt").write_text("".join(r + "\n" for r in data.relations))
    if RELATION_PARAMS_KEY in manifest.shards:
        np.save(out / "relation_params.npy", read_shard_of(run, manifest, RELATION_PARAMS_KEY))


def _relation_files(manifest: VersionManifest, fmt: str) -> dict[str, str | None]:
    """Where ``relations.json`` says the relation names and parameters of format ``fmt`` are."""
    has_params = RELATION_PARAMS_KEY in manifest.shards
    if fmt == "h5":
        model = f"model.v{manifest.version}.h5"
        return {"names_file": model, "names_attr": "relations", "params_file": model if has_params else None,
                "params_dataset": "model/relations/params" if has_params else None}
    return {"names_file": "relations.txt", "params_file": "relation_params.npy" if has_params else None}


def _write_h5_file(path: Path, fill: Callable[[h5py.File], None]) -> None:
    """An HDF5 file built in memory by ``fill`` and then written by Python.

    HDF5 never writes to the disk itself: when one of its writes fails (a full disk), closing
    the dataset fails too, and HDF5 closes it again in its exit handler, which crashes the
    interpreter (exit 139) after the error was reported. Python's write fails with a plain
    ``OSError`` instead. Costs one more copy of a partition's rows in memory."""
    image = io.BytesIO()
    with h5py.File(image, "w") as f:
        fill(f)
    with open(path, "wb") as handle:
        handle.write(image.getbuffer())


def _write_h5(run: Path, manifest: VersionManifest, data: DataManifest, out: Path, progress: Progress | None) -> None:
    globals_ = read_globals(run, manifest)
    v = manifest.version
    for t, etype in enumerate(data.entity_types):
        for p in range(data.num_partitions):
            emb = type_rows(run, manifest, data, t, p, globals_)

            def fill_embeddings(f: h5py.File, emb: np.ndarray = emb) -> None:
                f.attrs["format_version"] = 1
                f.create_dataset("embeddings", data=emb)

            _write_h5_file(out / f"embeddings_{etype.name}_{p}.v{v}.h5", fill_embeddings)
            del emb, fill_embeddings
            names: list[str] = []
            for chunk in partition_names(data, p, t):
                names.extend(chunk)
            (out / f"entity_names_{etype.name}_{p}.json").write_text(json.dumps(names))
            (out / f"entity_count_{etype.name}_{p}.txt").write_text(f"{len(names)}\n")
            if progress:
                progress(len(names))

    def fill_model(f: h5py.File) -> None:
        f.attrs["format_version"] = 1
        if RELATION_PARAMS_KEY in manifest.shards:
            f.create_dataset("model/relations/params", data=read_shard_of(run, manifest, RELATION_PARAMS_KEY))
        f.attrs["relations"] = json.dumps(data.relations)

    _write_h5_file(out / f"model.v{v}.h5", fill_model)
    (out / "checkpoint_version.txt").write_text(f"{v}\n")


def export_run(run: Path, manifest: VersionManifest, data: DataManifest, out: Path, fmt: str, dim: int,
               overwrite: bool = False, progress: Progress | None = None,
               relation_layout: list[dict[str, object]] | None = None, sample: int = 10_000, seed: int = 0,
               comparator: str = "dot", faiss_factory: str = "Flat") -> int:
    """Export ``manifest``'s embeddings to the folder ``out`` in format ``fmt``; returns the rows
    written (all of them, or for ``projector`` a sample of ``sample`` drawn with ``seed``).
    ``comparator`` and ``faiss_factory``: the FAISS index's metric and kind, for ``faiss``."""
    if fmt not in FORMATS:
        raise BigembedError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    with atomic_output_dir(out, "export", overwrite) as tmp:
        if fmt == "projector":  # a sample to look at, without the relations
            from bigembed.export.projector import write_projector

            return write_projector(run, manifest, data, tmp, sample, seed, progress)
        if fmt == "tsv":
            _write_tsv(run, manifest, data, tmp, progress)
        elif fmt == "npy":
            _write_npy(run, manifest, data, tmp, dim, progress)
        elif fmt == "parquet":
            _write_parquet(run, manifest, data, tmp, dim, progress)
        elif fmt == "faiss":
            _write_faiss(run, manifest, data, tmp, dim, progress, comparator, faiss_factory)
        else:
            _write_h5(run, manifest, data, tmp, progress)
        if relation_layout is not None:
            atomic_write_json(tmp / "relations.json", {
                "about": "params_file (params_dataset in it, for h5) is one flat float32 vector; relation i's "
                         "parameters are [offset, offset + prod(shape)) reshaped to shape; "
                         "score = comparator(operator(lhs, params), rhs)",
                **_relation_files(manifest, fmt),
                "relations": relation_layout,
            })
    return data.num_entities
