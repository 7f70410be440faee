"""Export speed of each format on the same RUN, alternating formats for ``--rounds`` rounds.

    python benchmarks/export_formats.py RUN --formats npy parquet --rounds 2

Reports each export's wall time (the whole command) and rows per second, and the output's size.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from measure import BIGEMBED


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path)
    ap.add_argument("--formats", nargs="+", default=["npy", "parquet"])
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as work:
        for r in range(args.rounds):
            for fmt in args.formats if r % 2 == 0 else args.formats[::-1]:
                out = Path(work) / fmt
                shutil.rmtree(out, ignore_errors=True)
                start = time.perf_counter()
                done = subprocess.run([*BIGEMBED, "export", str(args.run), "-o", str(out), "--format", fmt,
                                       "--no-progress"], capture_output=True, text=True)
                wall = time.perf_counter() - start
                if done.returncode:
                    raise SystemExit(done.stderr)
                rows = int(done.stderr.split("(")[-1].split(" rows")[0])
                size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
                print(json.dumps({"round": r, "format": fmt, "rows": rows, "wall_s": round(wall, 2),
                                  "rows_per_s": round(rows / wall), "mib": round(size / 2**20, 1)}), flush=True)


if __name__ == "__main__":
    main()
