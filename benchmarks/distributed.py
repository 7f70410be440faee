"""Several ranks against one process on the same machine, and what limits more machines.

Trains the same planted graph (P partitions) as one process with T threads and as R ranks
(torchrun, one machine) with T / R threads each, alternating the sides for ``--rounds``
rounds, and reports for each: the whole command's wall time, edges per second over the
training (summed over ranks), the time ranks waited on the bucket lock, and test MRR
(sampled ranking) beside it. Then it measures what a model of more machines needs: the
lock's round trip (claim + finish + release through the job's TCPStore, alone and with
ranks contending) and the time to write (with fsync) and read one partition's shards.

    python benchmarks/distributed.py --nodes 200000 --edges 8000000 --partitions 8 --ranks 2 --threads 2

Results go to stdout as JSON (and ``--json FILE``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from measure import BIGEMBED

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone"]


def prepare(work: Path, nodes: int, edges: int, partitions: int) -> Path:
    data = work / f"data-p{partitions}"
    if (data / "manifest.json").exists():
        return data
    g = work / "graph"
    subprocess.run([*BIGEMBED, "generate", "-o", str(g), "--nodes", str(nodes), "--edges", str(edges)], check=True)
    subprocess.run([*BIGEMBED, "import", str(g / "train.tsv"), "-o", str(data), "-p", str(partitions),
                    "--split", f"valid={g / 'valid.tsv'}", "--split", f"test={g / 'test.tsv'}"], check=True)
    return data


def train_once(data: Path, run: Path, ranks: int, threads: int, sets: list[str]) -> dict[str, Any]:
    shutil.rmtree(run, ignore_errors=True)
    launcher = BIGEMBED if ranks == 1 else [*TORCHRUN, "--nproc-per-node", str(ranks), "-m", "bigembed"]
    cmd = [*launcher, "train", str(data), "-o", str(run), "--no-progress", "--workers", str(threads), *sets]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{done.stderr[-3000:]}")
    records = [json.loads(line) for line in (run / "stats.jsonl").read_text().splitlines()]
    buckets = [r for r in records if "bucket_index" in r]
    edges = sum(r["edges"] for r in buckets)
    first = min(r["time"] - r["seconds"] - r.get("io_wait_s", 0) - r.get("lock_wait_s", 0) for r in buckets)
    last = max(r["time"] for r in buckets)
    ev = subprocess.run([*BIGEMBED, "eval", str(run), str(data), "--protocol", "sampled", "--max-edges", "20000",
                         "--json", "-", "--no-progress"], capture_output=True, text=True, check=True)
    return {"ranks": ranks, "threads_per_rank": threads, "wall_s": round(wall, 2),
            "training_s": round(last - first, 2), "edges_per_s": round(edges / (last - first)),
            "lock_wait_s": round(sum(r.get("lock_wait_s", 0.0) for r in buckets), 2),
            "io_wait_s": round(sum(r.get("io_wait_s", 0.0) for r in buckets), 2),
            "visits_by_rank": {str(k): sum(1 for r in buckets if r.get("rank", 0) == k)
                               for k in sorted({r.get("rank", 0) for r in buckets})},
            "test_mrr_sampled": round(json.loads(ev.stdout)["mrr"], 4)}


def lock_latency(partitions: int, ranks: int, epochs: int) -> dict[str, float]:
    """Lock operations through a TCPStore, ``ranks`` threads contending: each claims, finishes
    and releases visits until ``epochs`` epochs of P x P visits are shared out."""
    import torch.distributed as dist

    from bigembed.config import load_config
    from bigembed.scheduler.epoch import epoch_visits
    from bigembed.scheduler.lock import LockState, StoreLock

    t = load_config(None, {}).training
    parts = [(b.lhs, b.rhs) for b, _ in epoch_visits(t, partitions, 0)]
    server = dist.TCPStore("127.0.0.1", 0, 1, True, timeout=datetime.timedelta(seconds=60))
    stores = [dist.TCPStore("127.0.0.1", server.port, 1, False, timeout=datetime.timedelta(seconds=60))
              for _ in range(ranks)]
    ops = [0] * ranks

    def rank(r: int) -> None:
        lock = StoreLock(stores[r], r)
        while True:
            grant = lock.claim(parts)
            ops[r] += 1
            if grant.release:
                lock.release(grant.release, {})
                ops[r] += 1
            if grant.kind == "epoch_done":
                return
            if grant.kind == "bucket":
                lock.finish(grant.index)
                ops[r] += 1

    start = time.perf_counter()
    for _ in range(epochs):
        StoreLock(server, 0).reset(LockState.for_epoch(0, len(parts)))
        threads = [threading.Thread(target=rank, args=(r,)) for r in range(ranks)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
    elapsed = time.perf_counter() - start
    visits = epochs * len(parts)
    return {"partitions": partitions, "ranks": ranks, "visits": visits, "lock_ops": sum(ops),
            "ms_per_op": round(1000 * elapsed / sum(ops), 3), "visits_per_s": round(visits / elapsed)}


def partition_io(rows: int, dim: int, folder: Path) -> dict[str, float]:
    """Write (then fsync) and read back one partition's embeddings and Adagrad state."""
    from bigembed.storage.shards import LOCAL_SHARDS

    emb = np.random.default_rng(0).standard_normal((rows, dim), dtype=np.float32)
    ada = np.zeros(rows, np.float32)
    folder.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    for name, array in (("emb", emb), ("ada", ada)):
        path = folder / f"{name}{LOCAL_SHARDS.suffix}"
        LOCAL_SHARDS.write(path, array, durable=True, checksum=True)
    write = time.perf_counter() - start
    os.sync()
    start = time.perf_counter()
    for name, array in (("emb", emb), ("ada", ada)):
        LOCAL_SHARDS.read(folder / f"{name}{LOCAL_SHARDS.suffix}", None, array.shape, None)
    read = time.perf_counter() - start
    mb = (emb.nbytes + ada.nbytes) / 2**20
    return {"rows": rows, "dim": dim, "mib": round(mb, 1), "write_fsync_hash_s": round(write, 3),
            "read_s (page cache)": round(read, 3), "write_mib_per_s": round(mb / write)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", type=int, default=200_000)
    ap.add_argument("--edges", type=int, default=8_000_000)
    ap.add_argument("--partitions", type=int, default=8)
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2, help="threads of the one process (split over the ranks)")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--dim", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "bigembed-distributed-bench")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--model-only", action="store_true", help="only the lock and partition IO figures")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    data = prepare(args.work, args.nodes, args.edges, args.partitions)
    sets = ["--epochs", str(args.epochs), "--dim", str(args.dim)]
    per_rank = max(1, args.threads // args.ranks)
    runs: list[dict[str, Any]] = []
    for r in range(0 if args.model_only else args.rounds):
        sides = [(1, args.threads), (args.ranks, per_rank)]
        for ranks, threads in sides if r % 2 == 0 else sides[::-1]:
            result = train_once(data, args.work / "run", ranks, threads, sets)
            result["round"] = r
            runs.append(result)
            print(json.dumps(result), flush=True)
    manifest = json.loads((data / "manifest.json").read_text())
    rows = max(max(t["counts"]) for t in manifest["entities"].values())
    out = {
        "graph": {"nodes": args.nodes, "edges": args.edges, "partitions": args.partitions, "dim": args.dim,
                  "epochs": args.epochs},
        "runs": runs,
        "lock": [lock_latency(8, 1, 20), lock_latency(8, 4, 20), lock_latency(32, 16, 2),
                 lock_latency(100, 16, 1)],
        "partition_io": [partition_io(rows, args.dim, args.work / "io"),
                         partition_io(1_000_000, args.dim, args.work / "io")],
    }
    shutil.rmtree(args.work / "io", ignore_errors=True)
    print(json.dumps(out, indent=1))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
