"""The whole ``bigembed train`` command of two source trees side by side: where its time goes.

Each round runs ``python -m bigembed train DATA -o RUN --config CONFIG`` from the ``--before``
tree and from the ``--after`` tree (a git worktree of another commit, say), alternating which
goes first, and splits each command's wall time, from stats.jsonl, into: the time to its first
bucket (imports, config, creating version 0), the epochs' training, and what follows the last
bucket (the last commit and the process's exit).

    git worktree add /tmp/before d444bcc
    python benchmarks/whole_command.py DATA --config CONFIG --before /tmp/before --after . --rounds 3
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def one(tree: Path, data: Path, config: Path, run: Path) -> dict[str, float]:
    shutil.rmtree(run, ignore_errors=True)
    start = time.time()
    subprocess.run([sys.executable, "-m", "bigembed", "train", str(data.resolve()), "-o", str(run),
                    "--config", str(config.resolve()), "--no-progress"],
                   cwd=tree, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    end = time.time()
    records = [json.loads(line) for line in (run / "stats.jsonl").read_text().splitlines()]
    buckets = [r for r in records if "bucket_index" in r]
    starts = [r for r in records if "start" in r]
    first = starts[0]["time"] if starts else buckets[0]["time"] - buckets[0]["seconds"]
    return {"whole_s": end - start, "to_first_bucket_s": first - start,
            "training_s": sum(r["seconds"] + r.get("io_wait_s", 0.0) for r in buckets),
            "after_last_bucket_s": end - buckets[-1]["time"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", type=Path)
    ap.add_argument("--config", type=Path, required=True)
    ap.add_argument("--before", type=Path, required=True, help="a source tree (its bigembed/ is imported)")
    ap.add_argument("--after", type=Path, default=Path("."))
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    rows: dict[str, list[dict[str, float]]] = {"before": [], "after": []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for side in ("before", "after") if r % 2 == 0 else ("after", "before"):
                got = one(getattr(args, side), args.data, args.config, Path(tmp) / "run")
                rows[side].append(got)
                print(f"round {r + 1} {side}: " + ", ".join(f"{k} {v:.2f}" for k, v in got.items()), flush=True)
    keys = list(rows["before"][0])
    print("\n| side | " + " | ".join(keys) + " |\n|---|" + "---|" * len(keys))
    for side, runs in rows.items():
        cells = []
        for k in keys:
            values = [x[k] for x in runs]
            cells.append(f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})")
        print(f"| {side} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
