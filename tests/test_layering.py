"""Which package may import which: the house's layering, checked on the source (ast)."""

from __future__ import annotations

import ast
from pathlib import Path

import bigembed

ROOT = Path(bigembed.__file__).parent


def _imports(package: str) -> list[tuple[str, str, list[str]]]:
    """(file, module imported, names taken) for every ``bigembed`` import in ``package``."""
    out = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("bigembed"):
                out.append((path.name, node.module, [a.name for a in node.names]))
            elif isinstance(node, ast.Import):
                out += [(path.name, a.name, []) for a in node.names if a.name.startswith("bigembed")]
    return out


def test_the_partitioner_does_not_import_the_trainer():
    bad = [(f, m) for f, m, _ in _imports("partitioner") if m.startswith("bigembed.trainer")]
    assert not bad, bad


def test_evaluation_and_export_use_the_public_api_of_the_trainer_and_checkpoints():
    """Only the packages themselves (``bigembed.trainer``, ``bigembed.checkpoint``), never
    their modules' private names."""
    for package in ("evaluation", "export"):
        for file, module, names in _imports(package):
            if module.startswith(("bigembed.trainer", "bigembed.checkpoint")):
                assert module in ("bigembed.trainer", "bigembed.checkpoint"), (package, file, module)
                assert not any(n.startswith("_") for n in names), (package, file, module, names)


def test_only_the_shard_module_knows_zarr():
    users = sorted(p.relative_to(ROOT).as_posix() for p in ROOT.rglob("*.py")
                   if any(isinstance(n, ast.Import | ast.ImportFrom)
                          and ("zarr" in [a.name.split(".")[0] for a in n.names] if isinstance(n, ast.Import)
                               else (n.module or "").split(".")[0] == "zarr")
                          for n in ast.walk(ast.parse(p.read_text()))))
    assert users == ["storage/shards.py"]
