"""Where a string-id import keeps its edges: DuckDB in memory or in a database file, side by side.

Usage:  python benchmarks/import_store.py FILE [--rounds 2] [--partitions 4]
Each round imports FILE once with the tables forced into memory and once into the database
file (the choice `keep_on_disk` makes by input size), alternating, and prints the wall time,
what DuckDB held on disk at the end of the load, and the peak RSS of each (a child process each).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = """
import json, resource, sys, time
from pathlib import Path
import bigembed.partitioner.engine as engine
from bigembed.partitioner import ImportSpec, Source
mode, path, out, partitions = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4])
engine.keep_on_disk = lambda spec, limit: mode == "disk"
start = time.perf_counter()
_, stats = engine.import_data(ImportSpec(sources=[Source("train", path)], num_partitions=partitions), out)
print(json.dumps({"mode": mode, "wall_s": time.perf_counter() - start, "on_disk_mib": stats.spilled_bytes / 2**20,
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("file", type=Path)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--partitions", type=int, default=4)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="import_store_"))
    try:
        for _ in range(args.rounds):
            for mode in ("memory", "disk"):
                out = work / mode
                shutil.rmtree(out, ignore_errors=True)
                done = subprocess.run([sys.executable, "-c", CHILD, mode, str(args.file), str(out),
                                       str(args.partitions)], check=True, capture_output=True, text=True)
                row = json.loads(done.stdout.strip().splitlines()[-1])
                print(f"{row['mode']:>6}: {row['wall_s']:6.1f} s, {row['on_disk_mib']:7.1f} MiB on disk, "
                      f"peak RSS {row['peak_rss_mib']:7.0f} MiB", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
