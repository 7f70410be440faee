"""Check that PyTorch-BigGraph's own checkpoint reader loads a `bigembed export --format h5` folder.

PBG must live in its own venv (it is not a bigembed dependency):
    python3 -m venv pbgvenv && pbgvenv/bin/pip install torch==2.13.0 'setuptools<81' torchbiggraph==1.0.0
Usage:
    python benchmarks/check_pbg_h5.py --pbg-python pbgvenv/bin/python --export EXPORT_DIR [--entity node]
"""

from __future__ import annotations

import argparse
import subprocess
import sys

PROBE = """
import json, sys
from pathlib import Path
from torchbiggraph.checkpoint_storage import FileCheckpointStorage
folder, entity = Path(sys.argv[1]), sys.argv[2]
storage = FileCheckpointStorage(str(folder))
version = storage.load_version()
parts = sorted(folder.glob(f"entity_count_{entity}_*.txt"))
total = 0
for p in range(len(parts)):
    emb, _ = storage.load_entity_partition(version, entity, p)
    names = json.loads((folder / f"entity_names_{entity}_{p}.json").read_text())
    count = int((folder / f"entity_count_{entity}_{p}.txt").read_text())
    assert emb.shape[0] == len(names) == count, (p, tuple(emb.shape), len(names), count)
    total += count
state, _ = storage.load_model(version)
print(f"PBG read v{version}: {len(parts)} partitions, {total} rows, dim {emb.shape[1]}, "
      f"model params {sorted(state) if state else []}")
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pbg-python", required=True, help="python of a venv with torchbiggraph installed")
    ap.add_argument("--export", required=True, help="folder written by `bigembed export --format h5`")
    ap.add_argument("--entity", default="node")
    args = ap.parse_args()
    sys.exit(subprocess.run([args.pbg_python, "-W", "ignore", "-c", PROBE, args.export, args.entity]).returncode)


if __name__ == "__main__":
    main()
