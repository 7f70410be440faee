"""Training on several machines: ranks launched by ``torchrun`` share one RUN directory.

Every rank runs ``bigembed train DATA -o RUN`` with the same arguments on shared storage.
Rank 0 decides the config, resumes or creates the run, and commits versions; the others
follow. Visits are shared out by the bucket lock (:mod:`bigembed.scheduler.lock`), whose
state lives in the job's TCPStore (on the rendezvous host, with rank 0). A rank holds the
partitions of its visit in its own buffer, writes them back into the version being staged
(hashing them) before it releases them, and tells the lock where it staged them, so the next
holder reads the newest copy.

The relation parameters and global vectors are shared through the store as a parameter
server (PyTorch-BigGraph's design): after each visit a rank adds its change to the shared copy
and goes on from the sum. Summing them with a collective only at commits, as first built, let
each rank train a whole epoch against its own copy: on a planted graph at P = 8 that scored
0.23-0.25 test MRR where one process scored 0.61 (benchmarks/RESULTS.md); exchanged after each
visit, 2 ranks score 0.62.

A commit is a round every rank joins: rank 0 pauses the lock (a commit is due, or a rank was
asked to stop); each rank finishes its slab, writes back and releases everything, adds its
last change to the shared parameters, and waits at a barrier; all ranks take the shared
values; rank 0 writes them, commits the version with the existing protocol (naming the visits
trained out of order), and the ranks go on from it. A version is thus committed only once
every rank has written back. (The process group, gloo, carries one broadcast: the
attempt's id.)

A watchdog thread in every rank beats a counter in the store each second and watches the
others': a rank silent for ``distributed.dead_after_seconds``, a rank that failed, or a store that
vanished (rank 0's machine gone) stops the rank with one line, so no rank hangs. Nothing
committed is lost; the same command resumes from the last version, with any number of ranks.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import secrets
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bigembed import training as tr
from bigembed.checkpoint import Position, append_stats, epoch_progress, read_manifest
from bigembed.checkpoint.run import exclusive_run, is_run, read_run_config
from bigembed.checkpoint.versions import next_version
from bigembed.config import Config, config_to_dict, flatten, load_config
from bigembed.errors import BigembedError, ConfigError, TrainingDivergedError
from bigembed.progress import progress_bar
from bigembed.scheduler.epoch import chunk_size, epoch_visits
from bigembed.scheduler.lock import Grant, LockState, StoreLock, StoreMutex
from bigembed.storage.data_manifest import DataManifest, read_data_manifest
from bigembed.trainer import BucketTrainer, bucket_seed, native
from bigembed.trainer.allocator import keep_freed_buffers
from bigembed.trainer.device import training_device

HEARTBEAT = 1.0  # seconds between a rank's beats (distributed.dead_after_seconds: when one is dead)

Log = Callable[[str], None]


def launched() -> bool:
    """Whether this process is one rank of several, started by torchrun (or its environment)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1")) > 1
    except ValueError:
        raise BigembedError(f"WORLD_SIZE={os.environ['WORLD_SIZE']!r} is not a number of ranks") from None


class Cluster:
    """This rank's membership of the job: the store, the process group, the watchdog."""

    def __init__(self, rank: int, world: int, local_rank: int, local_world: int, store: Any, where: str,
                 dead_after: float = 10.0) -> None:
        self.rank, self.world, self.local_rank, self.local_world = rank, world, local_rank, local_world
        self.store, self.where = store, where
        self.dead_after = dead_after  # rank 0's setting replaces this rank's once the job has started
        self.job = ""  # this attempt's id (in stats.jsonl's lock records)
        self.on_beat: Callable[[], None] | None = None  # rank 0's progress bar, refreshed each beat
        self._closing = threading.Event()
        self._rounds = 0
        self._watchdog = threading.Thread(target=self._watch, name="bigembed-watchdog", daemon=True)

    @classmethod
    def join(cls, settings: Config) -> Cluster:
        """Join the job torchrun started: its store, a process group (gloo), and a key prefix
        of this attempt (a restarted job starts clean)."""
        import torch.distributed as dist

        env = os.environ
        missing = [k for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT") if k not in env]
        if missing:
            raise BigembedError(f"WORLD_SIZE is set but {', '.join(missing)} are not: start every rank with torchrun "
                                "(see README, \"Several machines\")")
        rank, world = int(env["RANK"]), int(env["WORLD_SIZE"])
        host, port = env["MASTER_ADDR"], int(env["MASTER_PORT"])
        wait = settings.distributed.connect_timeout_seconds
        timeout = datetime.timedelta(seconds=wait)
        hosts = rank == 0 and env.get("TORCHELASTIC_USE_AGENT_STORE") != "True"  # else torchrun's agent hosts it
        try:
            server = dist.TCPStore(host, port, world, hosts, timeout=timeout)
            # torchrun's store outlives a restart (--max-restarts): each attempt keeps to its own keys
            attempt = f"bigembed/{env.get('TORCHELASTIC_RUN_ID', 'job')}/{env.get('TORCHELASTIC_RESTART_COUNT', '0')}"
            base = dist.PrefixStore(attempt, server)
            dist.init_process_group("gloo", store=dist.PrefixStore("pg", base),
                                    rank=rank, world_size=world, timeout=timeout)
        except (RuntimeError, ValueError, OSError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise BigembedError(
                f"rank {rank}: could not join the job at {host}:{port} within {wait:g} s ({first}); "
                "check that every machine runs the same torchrun command with the same --rdzv-endpoint, "
                "and that the port is reachable") from None
        token = torch.tensor([secrets.randbits(62) if rank == 0 else 0], dtype=torch.int64)
        dist.broadcast(token, 0)  # this attempt's id, in the lock's records
        store = dist.PrefixStore(f"{int(token)}/", base)
        cluster = cls(rank, world, int(env.get("LOCAL_RANK", 0)), int(env.get("LOCAL_WORLD_SIZE", 1)), store,
                      f"{host}:{port}", settings.distributed.dead_after_seconds)
        cluster.job = f"{int(token):x}"
        cluster._watchdog.start()
        return cluster

    # -- liveness ---------------------------------------------------------------------------------

    def _watch(self) -> None:
        seen = {r: (-1, time.monotonic()) for r in range(self.world) if r != self.rank}
        while not self._closing.wait(HEARTBEAT):
            try:
                self.store.add(f"alive/{self.rank}", 1)
                if self.store.check(["failed"]):
                    self._die(f"{self.store.get('failed').decode()}; stopping rank {self.rank} too")
                now = time.monotonic()
                for r, (beats, since) in seen.items():
                    count = self.store.add(f"alive/{r}", 0)
                    if count != beats:
                        seen[r] = (count, now)
                    elif now - since > self.dead_after:
                        self._die(f"rank {r} stopped responding (no heartbeat for {now - since:.0f} s: killed, "
                                  f"or its machine is gone); stopping rank {self.rank}")
                if self.on_beat is not None:
                    self.on_beat()
            except Exception as exc:  # noqa: BLE001 - whatever the store raises, its host (rank 0's machine) stopped
                if self._closing.is_set():
                    return
                self._die(f"lost the job's store at {self.where} ({type(exc).__name__}): rank 0 or its torchrun "
                          f"stopped; stopping rank {self.rank}")

    def _die(self, message: str) -> None:
        if self._closing.is_set():
            return
        sys.stdout.flush()
        sys.stderr.write(f"error: {message}; nothing committed is lost: rerun the same command to resume "
                         "from the last committed version\n")
        sys.stderr.flush()
        os._exit(1)

    def fail(self, message: str) -> None:
        """Tell the other ranks this one failed (they stop within a heartbeat)."""
        try:
            if not self.store.check(["failed"]):
                self.store.set("failed", f"rank {self.rank} failed: {message}")
        except Exception:  # noqa: BLE001 - the store may be what failed; the watchdog says so
            pass

    def close(self) -> None:
        import torch.distributed as dist

        self._closing.set()
        if dist.is_initialized():
            dist.destroy_process_group()

    # -- meeting points ---------------------------------------------------------------------------

    def barrier(self, name: str) -> None:
        """Wait until every rank got here (polling the store: the watchdog stays in charge)."""
        key = f"barrier/{name}"
        self.store.add(key, 1)
        delay = 0.001
        while self.store.add(key, 0) < self.world:
            time.sleep(delay)
            delay = min(delay * 2, 0.1)

    def publish(self, key: str, value: Any) -> None:
        self.store.set(f"news/{key}", json.dumps(value))

    def wait_for(self, key: str) -> Any:
        delay = 0.001
        while not self.store.check([f"news/{key}"]):
            time.sleep(delay)
            delay = min(delay * 2, 0.1)
        return json.loads(self.store.get(f"news/{key}"))

    def next_round(self) -> int:
        self._rounds += 1
        return self._rounds


class _SharedParams:
    """The relation parameters and global vectors (and their Adagrad state), shared as a
    parameter server in the job's store: after each visit a rank adds its change since it
    last looked to the shared copy (under a mutex) and goes on from the sum, so every rank
    trains against the others' updates within a bucket's time, and a commit round leaves
    every rank with the same values (each adds its last change, then all read the sum)."""

    NAMES = ("params", "adagrad", "globals", "globals_adagrad")
    KEY = "shared/values"

    def __init__(self, relations: Any, store: Any, rank: int) -> None:
        self.relations, self.store = relations, store
        self.mutex = StoreMutex(store, "shared/mutex", rank)
        self.names = [n for n in self.NAMES if (t := getattr(relations, n)) is not None and t.numel()]
        self.last = self._local()
        self.exchanges, self.seconds = 0, 0.0

    def _local(self) -> np.ndarray:
        if not self.names:
            return np.zeros(0, np.float32)
        return torch.cat([getattr(self.relations, n).detach().flatten().cpu() for n in self.names]).numpy().copy()

    def _assign(self, values: np.ndarray) -> None:
        offset = 0
        for name in self.names:
            tensor = getattr(self.relations, name)
            size = tensor.numel()
            with torch.no_grad():
                tensor.copy_(torch.from_numpy(values[offset:offset + size]).view_as(tensor))
            offset += size
        self.last = values

    def publish(self) -> None:
        """Rank 0, before any rank trains: the run's values are the shared copy."""
        if self.names:
            self.store.set(self.KEY, self.last.tobytes())

    def exchange(self) -> None:
        """Add this rank's change since it last looked, and go on from the sum."""
        if not self.names:
            return
        started = time.perf_counter()
        change = self._local() - self.last
        with self.mutex:
            shared = np.frombuffer(self.store.get(self.KEY), np.float32).copy()
            shared += change
            self.store.set(self.KEY, shared.tobytes())
        self._assign(shared)
        self.exchanges += 1
        self.seconds += time.perf_counter() - started

    def pull(self) -> None:
        """Take the shared values as they are (every rank has added its change)."""
        if self.names:
            self._assign(np.frombuffer(self.store.get(self.KEY), np.float32).copy())


@dataclass
class _Rank:
    cluster: Cluster
    session: tr._Session
    trainer: BucketTrainer
    lock: StoreLock
    shared: _SharedParams
    log: Log
    show_progress: bool

    @property
    def lead(self) -> bool:
        return self.cluster.rank == 0


def train(data_dir: Path, run_dir: Path, config_file: Path | None = None, overrides: dict[str, Any] | None = None,
          override: bool = False, log: Log = print, show_progress: bool = True,
          memory: int | None = None) -> tr.TrainResult:
    """:func:`bigembed.training.train` for one rank of a job torchrun started."""
    data_dir, run_dir = Path(data_dir), Path(run_dir)
    data = read_data_manifest(data_dir)
    data.require_split("train")
    keep_freed_buffers()
    cluster = Cluster.join(_local_settings(run_dir, config_file, overrides or {}))
    try:
        with ExitStack() as stack:
            if cluster.rank == 0:
                stack.enter_context(exclusive_run(run_dir))
                start = _lead_start(cluster, data, run_dir, config_file, dict(overrides or {}), override, memory, log)
            else:
                start = cluster.wait_for("start")
            if "done" in start:
                cluster.barrier("end")
                return tr.TrainResult(start["version"], start["epochs_done"], None, quiet=cluster.rank > 0)
            config = load_config(None, None, base=flatten(start["config"]))
            cluster.dead_after = config.distributed.dead_after_seconds
            result = _train_rank(cluster, data, run_dir, config, start, log if cluster.rank == 0 else _quiet,
                                 show_progress)
            return replace(result, quiet=cluster.rank > 0)
    except BaseException as exc:
        cluster.fail(str(exc) or type(exc).__name__)
        raise
    finally:
        cluster.close()


def _quiet(message: str) -> None:
    """Ranks other than 0 keep quiet: rank 0 speaks for the job, errors speak for themselves."""


def _local_settings(run_dir: Path, config_file: Path | None, overrides: dict[str, Any]) -> Config:
    """This rank's reading of the config before the job has formed (rank 0 decides the run's
    config after): the timeouts to join with. Defaults when it does not load."""
    try:
        base = flatten(read_run_config(run_dir)["config"]) if is_run(run_dir) else None
        return load_config(config_file, overrides, base=base)
    except (BigembedError, ValueError):
        return load_config(None, None)  # rank 0 reports a bad config; the others hear of it through the store


def _lead_start(cluster: Cluster, data: DataManifest, run_dir: Path, config_file: Path | None,
                overrides: dict[str, Any], override: bool, memory: int | None, log: Log) -> dict[str, Any]:
    """Rank 0: decide the config, resume or create the run, and tell the others."""
    config, exists = tr._resolve_run(data, run_dir, config_file, overrides, override, memory, log)
    useful = max(1, data.num_partitions // 2)
    if cluster.world > useful:
        raise ConfigError(
            f"{data.path.parent} has {data.num_partitions} partition(s): at most {useful} rank(s) can train at once "
            f"(a bucket holds two partitions, and no two ranks hold the same one), but {cluster.world} were "
            f"started; start at most {useful} (torchrun --nproc-per-node, --nnodes), or import with "
            f"`bigembed import --partitions {2 * cluster.world}` or more")
    if config.training.negative_partitions == "all":
        raise ConfigError("training.negative_partitions = all needs every partition in one rank's memory; several "
                          "ranks train with negatives from the answer's partition (set it to auto or answer)")
    opened = tr._open_run(data, run_dir, config, exists, log)
    if isinstance(opened, tr.TrainResult):
        start: dict[str, Any] = {"done": True, "version": opened.version, "epochs_done": opened.epochs_done}
    else:
        base, resumed = opened
        start = {"config": config_to_dict(config), "version": base.version, "stage": next_version(run_dir),
                 "resumed": None if resumed is None else list(resumed.as_tuple())}
    cluster.publish("start", start)
    return start


def _rank_config(config: Config, cluster: Cluster) -> Config:
    """This rank's share of the machine: ``training.workers = 0`` (one per core) becomes one
    per core over the ranks on this machine."""
    t = config.training
    if t.workers or t.deterministic:
        return config
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return replace(config, training=replace(t, workers=max(1, min(8, cores // cluster.local_world))))


def _train_rank(cluster: Cluster, data: DataManifest, run_dir: Path, config: Config, start: dict[str, Any],
                log: Log, show_progress: bool) -> tr.TrainResult:
    config = _rank_config(config, cluster)
    device = training_device(config.training)
    if device.type == "cuda":
        device = torch.device("cuda", cluster.local_rank)
    kernels = native.choose(config.training.kernels, config.training.ranking_gradients, device.type)
    base = read_manifest(run_dir, start["version"])
    resumed = None if start["resumed"] is None else Position(*start["resumed"])
    session = tr._Session(run_dir, data, config, base, device, version=start["stage"], capacity=2)
    session.hash_evictions = True
    trainer = BucketTrainer(session.model, config.training, config.model.reciprocal, kernels)
    lock = StoreLock(cluster.store, cluster.rank)
    rank = _Rank(cluster, session, trainer, lock, _SharedParams(session.relations, cluster.store, cluster.rank), log,
                 show_progress)
    P, t = data.num_partitions, config.training
    if rank.lead:
        log(f"{cluster.world} ranks ({trainer.workers} worker thread(s) on rank 0); the bucket lock is in the job's "
            f"store at {cluster.where}; rank 0 commits" + (
                f"; each rank holds 2 partitions (training.buffer_partitions = {t.buffer_partitions} applies to "
                "one process)" if t.buffer_partitions > 2 else ""))
        log(trainer.kernels.why)
        pos = base.position
        visits = len(epoch_visits(t, P, pos.epoch))
        done, partial = epoch_progress(run_dir, base, visits)
        if pos.slab:
            partial[pos.bucket] = pos.slab
        lock.reset(LockState.for_epoch(pos.epoch, visits, [*range(pos.bucket), *done], partial,
                                       fresh=resumed is None))
        rank.shared.publish()
    append_stats(run_dir, {"start": {"version": base.version, "device": str(device), "workers": trainer.workers,
                                     "rank": cluster.rank, "ranks": cluster.world, "pid": os.getpid(),
                                     **trainer.kernels.record()}})
    cluster.barrier("ready")
    try:
        with tr._stop_on_signals(session, log):
            for epoch in range(base.position.epoch, t.epochs):
                if not _train_epoch(rank, epoch):
                    break
    finally:
        trainer.close()
        session.buffer.close()
    cluster.barrier("end")
    return tr._finish(session, resumed, log)


def _train_epoch(rank: _Rank, epoch: int) -> bool:
    """Train this rank's share of ``epoch``, joining every commit round; False when the job
    stops (a signal, or early stopping)."""
    session = rank.session
    t, P = session.config.training, session.data.num_partitions
    visits = epoch_visits(t, P, epoch)
    counts = [chunk_size(session.data.edge_count("train", b), c, t.edge_chunks) for b, c in visits]
    parts: list[tuple[int, ...]] = [(b.lhs, b.rhs) if n else () for (b, _), n in zip(visits, counts, strict=True)]
    with _epoch_bar(rank, epoch, counts):
        while True:
            kind = _work(rank, epoch, visits, counts, parts)
            why = rank.lock.paused() or ""
            keep_going, final = _commit_round(rank, epoch, len(visits), final=kind == "epoch_done")
            if final:
                return keep_going
            if why.startswith("stop"):
                session.stop_requested = session.stop_requested or why.split(":", 1)[1]
                return False


@contextmanager
def _epoch_bar(rank: _Rank, epoch: int, counts: list[int]) -> Iterator[None]:
    """Rank 0's bar: the edges every rank trained this epoch (a counter in the store)."""
    if not rank.lead:
        yield
        return
    t = rank.session.config.training
    state = rank.lock.state()
    left = set(state.todo)
    initial = sum(n for i, n in enumerate(counts) if i not in left)
    with progress_bar(sum(counts), f"epoch {epoch + 1}/{t.epochs} ({rank.cluster.world} ranks)", "edge",
                      rank.show_progress, initial=initial) as bar:
        key = f"edges/{epoch}"

        def refresh() -> None:
            bar.update(initial + rank.cluster.store.add(key, 0) - bar.n)

        log = rank.log
        if not bar.disable:  # lines printed while the bar shows go above it, not through it
            rank.log = lambda message: bar.write(message, file=sys.stderr)
        rank.cluster.on_beat = refresh
        try:
            yield
        finally:
            rank.cluster.on_beat = None
            rank.log = log
            refresh()  # the last visits' edges, before the bar closes


def _work(rank: _Rank, epoch: int, visits: list[Any], counts: list[int], parts: list[tuple[int, ...]]) -> str:
    """Claim and train visits until the lock pauses (a commit round) or the epoch is done."""
    session, lock = rank.session, rank.lock
    waited, delay = 0.0, 0.005
    while True:
        if session.stop_requested:
            lock.pause(f"stop:{session.stop_requested}")
        asked = time.perf_counter()
        grant = lock.claim(parts)
        if grant.kind != "bucket":
            _release(rank, grant.release)
            if grant.kind != "wait":
                return grant.kind
            time.sleep(delay)
            delay = min(delay * 2, 0.2)
            waited += time.perf_counter() - asked
            continue
        delay = 0.005
        _release(rank, grant.release)
        _record(rank, "claim", grant.seq, grant.time, parts[grant.index], grant.index)
        waited += time.perf_counter() - asked
        _train_visit(rank, epoch, grant, visits, counts, waited)
        rank.shared.exchange()
        waited = 0.0
        _ask_for_a_round(rank)  # after a visit: each round follows some training


def _train_visit(rank: _Rank, epoch: int, grant: Grant, visits: list[Any], counts: list[int],
                 waited: float) -> None:
    session, cluster = rank.session, rank.cluster
    t = session.config.training
    k = grant.index
    bucket, chunk = visits[k]
    for key, (p, entry) in grant.staged.items():  # the newest copies, staged by the rank that held them
        session.writer.written[key] = entry
        session.keys_of.setdefault(int(p), set()).add(key)
    stopped_at, trained, loss, seconds, io = None, 0, 0.0, 0.0, 0.0
    if counts[k]:
        started = time.perf_counter()
        session.buffer.acquire([bucket.lhs, bucket.rhs])
        io = time.perf_counter() - started
        edges = tr.visit_edges(session.data, bucket, chunk, t.edge_chunks)
        stats = rank.trainer.train_bucket(edges, session.buffer[bucket.lhs], session.buffer[bucket.rhs],
                                          session.relations, bucket_seed(t.seed, epoch, k), None, grant.slab,
                                          _slab_hook(rank, epoch, k, len(visits), bucket))
        stopped_at, trained, loss, seconds = stats.stopped_at, stats.edges, stats.loss, stats.seconds
    rank.lock.finish(k, stopped_at)
    append_stats(session.run_dir, {
        "epoch": epoch, "bucket_index": k, "lhs": bucket.lhs, "rhs": bucket.rhs, "edge_chunk": chunk,
        "rank": cluster.rank, "edges": trained, "loss": loss / max(1, trained), "seconds": round(seconds, 4),
        "io_wait_s": round(io, 4), "lock_wait_s": round(waited, 4),
        "edges_per_s": round(trained / max(seconds, 1e-9), 1),
        **({} if grant.slab == 0 else {"from_slab": grant.slab}),
        **({} if stopped_at is None else {"stopped_at_slab": stopped_at}),
    })


def _ask_for_a_round(rank: _Rank) -> None:
    """Pause the lock for a commit round when this rank was asked to stop, or (rank 0) when a
    commit is due."""
    if rank.session.stop_requested:
        rank.lock.pause(f"stop:{rank.session.stop_requested}")
    elif rank.lead and tr._commit_due(rank.session):
        rank.lock.pause("commit")


def _slab_hook(rank: _Rank, epoch: int, k: int, visits: int, bucket: Any) -> Callable[[int, int, float, int], bool]:
    """After each slab: stop on a non-finite loss; stop the visit when the lock is paused (a
    commit round or a stop; the rest of the visit goes back to the lock)."""
    session = rank.session

    def after_slab(slabs_done: int, slabs: int, loss: float, edges: int) -> bool:
        rank.cluster.store.add(f"edges/{epoch}", edges)  # rank 0's bar moves slab by slab
        if not math.isfinite(loss):
            raise TrainingDivergedError(
                f"rank {rank.cluster.rank}, epoch {epoch + 1}, bucket {k + 1}/{visits} (partitions {bucket.lhs}, "
                f"{bucket.rhs}), slab {slabs_done}/{slabs}: the loss is {loss} (training diverged); nothing of it "
                f"was committed, v{session.base.version} stays CURRENT: lower training.lr "
                f"(now {session.config.training.lr})")
        if slabs_done == slabs:
            return False
        _ask_for_a_round(rank)
        return rank.lock.paused() is not None

    return after_slab


def _release(rank: _Rank, partitions: tuple[int, ...]) -> None:
    """Write back ``partitions`` (staged in the version being written, hashed) and give them up,
    telling the lock where they were staged."""
    if not partitions:
        return
    session = rank.session
    for p in partitions:
        if p in session.buffer:
            session.buffer.evict(p)
    staged = {key: [p, session.writer.written.pop(key)] for p in partitions for key in session.keys_of.pop(p, ())}
    seq, when = rank.lock.release(partitions, staged)
    _record(rank, "release", seq, when, partitions)


def _record(rank: _Rank, what: str, seq: int, when: float, partitions: tuple[int, ...] | list[int],
            index: int | None = None) -> None:
    """A claim or release in stats.jsonl, with the lock's order and clock (for audits)."""
    append_stats(rank.session.run_dir, {"lock": what, "job": rank.cluster.job, "rank": rank.cluster.rank,
                                        "seq": seq, "at": when,
                                        "partitions": sorted(set(partitions)),
                                        **({} if index is None else {"visit": index})})


def _commit_round(rank: _Rank, epoch: int, visits: int, final: bool) -> tuple[bool, bool]:
    """Every rank has written back and released all it held: sum the shared parameters'
    changes, and rank 0 commits a version (and, at the end of an epoch, validates and starts
    the next epoch's lock). Returns whether training goes on, and whether the epoch is done
    (a round asked for mid-epoch may find every visit trained)."""
    cluster, session, lock = rank.cluster, rank.session, rank.lock
    round_ = cluster.next_round()
    rank.shared.exchange()
    cluster.barrier(f"commit/{round_}")
    rank.shared.pull()  # every rank added its change before the barrier: all now hold the same values
    if rank.lead:
        state = lock.state()
        final = final or not state.todo
        if final:
            position, later = Position(epoch + 1, 0), {}
        else:
            first, slab, done, partial = state.position(visits)
            position, later = Position(epoch, first, slab), tr._later(set(done), partial, first)
        session.writer.written.update({key: entry for key, (_, entry) in state.staged.items()})
        manifest = session.commit(position, later)
        keep_going = True
        if final:
            edges = sum(session.data.edge_count("train", b) for b, _ in epoch_visits(
                session.config.training, session.data.num_partitions, epoch))
            rank.log(f"epoch {epoch + 1}/{session.config.training.epochs}: {edges} edges on {cluster.world} ranks, "
                     f"committed v{manifest.version} ({session.last_commit_seconds:.1f} s)")
            keep_going = tr._validate(session, epoch, rank.log, rank.show_progress)
            t = session.config.training
            if epoch + 1 < t.epochs:
                following = LockState.for_epoch(epoch + 1, len(epoch_visits(t, session.data.num_partitions, epoch + 1)))
                following.seq = state.seq  # the lock's order runs on through the job
                lock.reset(following)
        else:
            rank.log(f"committed v{manifest.version} at epoch {epoch + 1}, next visit {position.bucket + 1}/{visits} "
                     f"({session.last_commit_seconds:.1f} s, all {cluster.world} ranks)")
            state.staged = {}
            lock.reset(state)
        cluster.publish(f"round/{round_}", {"version": manifest.version, "go_on": keep_going, "final": final})
        return keep_going, final
    news = cluster.wait_for(f"round/{round_}")
    session.advance(read_manifest(session.run_dir, news["version"]))
    return bool(news["go_on"]), bool(news["final"])
