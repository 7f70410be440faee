"""How long Ctrl-C takes to stop a one-partition training, and whether commits happen inside
its one bucket: an earlier bigembed against this one, on the same graph, in one invocation.

At P = 1 the whole epoch is one bucket. The run is started with
``checkpoint.interval_seconds = INTERVAL``, sent SIGINT after ``--after`` seconds, and
timed until it exits; the versions it committed before the signal are counted.

Usage::

    git worktree add /tmp/before 5a5ff69
    python benchmarks/stop_latency.py --before /tmp/before [--edges 3000000 --after 12 --interval 2]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from ab import HERE, command


def stop_once(tree: Path, work: Path, data: Path, args: argparse.Namespace) -> dict[str, object]:
    run = work / f"run-{tree.name}"
    shutil.rmtree(run, ignore_errors=True)
    proc = subprocess.Popen([*command(tree), "train", str(data), "-o", str(run), "--epochs", "50", "--dim",
                             str(args.dim), "--set", f"checkpoint.interval_seconds={args.interval}", "--no-progress"],
                            stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "BIGEMBED_CACHE_DIR": str(work / f"cache-{tree.name}")})
    time.sleep(args.after)
    before = (run / "CURRENT").read_text().strip() if (run / "CURRENT").exists() else None
    proc.send_signal(signal.SIGINT)
    sent = time.perf_counter()
    _, err = proc.communicate()
    latency = time.perf_counter() - sent
    manifest = json.loads((run / "checkpoints" / (run / "CURRENT").read_text().strip() / "manifest.json").read_text())
    commits = sum(1 for line in err.splitlines() if line.startswith("committed v"))
    return {"latency_s": round(latency, 1), "exit": proc.returncode, "current_at_signal": before,
            "commits_before_signal": commits, "stopped_at": manifest["position"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", type=Path, required=True)
    ap.add_argument("--after-tree", type=Path, default=HERE)
    ap.add_argument("--nodes", type=int, default=100_000)
    ap.add_argument("--edges", type=int, default=3_000_000)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--after", type=float, default=12.0, help="seconds before SIGINT")
    ap.add_argument("--interval", type=float, default=2.0, help="checkpoint.interval_seconds")
    ap.add_argument("--work", type=Path, default=Path("benchmarks/work/stop"))
    args = ap.parse_args()
    shutil.rmtree(args.work, ignore_errors=True)
    work = args.work.resolve()
    work.mkdir(parents=True)
    graph, data = work / "graph", work / "data"
    subprocess.run([*command(args.after_tree), "generate", "-o", str(graph), "--nodes", str(args.nodes),
                    "--edges", str(args.edges), "--no-progress"], check=True)
    subprocess.run([*command(args.before), "import", str(graph / "train.tsv"), "-o", str(data), "-p", "1",
                    "--no-progress"], check=True)  # the older layout, which both read
    for name, tree in (("before", args.before.resolve()), ("after", args.after_tree.resolve())):
        if name == "after":  # the newer DATA carries a fingerprint; import it with the newer code
            shutil.rmtree(data)
            subprocess.run([*command(tree), "import", str(graph / "train.tsv"), "-o", str(data), "-p", "1",
                            "--no-progress"], check=True)
        print(name, json.dumps(stop_once(tree, work, data, args)), file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
