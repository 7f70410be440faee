"""Shared fixtures: tiny odd-sized graphs written to tmp_path, imported with the library."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from bigembed import config
from bigembed.partitioner import ImportSpec, Source
from bigembed.partitioner.engine import import_data


def write_tiny_graph(
    path: Path, nodes: int = 37, relations: int = 3, edges: int = 211, seed: int = 5
) -> list[tuple[str, str, str]]:
    """A seeded random graph as TSV; returns the (lhs, rel, rhs) triples written."""
    rng = random.Random(seed)
    triples = [(f"v{rng.randrange(nodes)}", f"r{rng.randrange(relations)}", f"v{rng.randrange(nodes)}")
               for _ in range(edges)]
    path.write_text("".join("\t".join(t) + "\n" for t in triples))
    return triples


def import_files(out: Path, files: dict[str, Path], partitions: int, **kw) -> Path:
    spec = ImportSpec(sources=[Source(s, p) for s, p in files.items()], num_partitions=partitions, **kw)
    import_data(spec, out)
    return out


@pytest.fixture
def tiny_graph(tmp_path: Path) -> tuple[Path, list[tuple[str, str, str]]]:
    path = tmp_path / "tiny.tsv"
    return path, write_tiny_graph(path)


# bigembed's defaults before a knowledge-graph recipe became the default (ComplEx, reciprocal
# relations, softmax over 500 uniform negatives, N3, per-coordinate Adagrad): the
# PyTorch-BigGraph-style step (both sides corrupted, in-batch plus sampled negatives, margin
# ranking, row Adagrad). Unit tests of that path start from these and change what they test.
PBG_STYLE = {**config.PBG_STYLE, "model.dim": 100}
