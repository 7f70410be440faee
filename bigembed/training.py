"""`bigembed train`: start or resume a run, composing the separate units.

start/resume (checkpoint) -> order buckets (scheduler) -> load partitions (buffer)
-> train bucket (trainer) -> write back + commit (checkpoint). Each unit lives in
its own package; this module only wires them together.
"""

from __future__ import annotations

import functools
import math
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bigembed import progress
from bigembed.checkpoint import (
    GLOBAL_ADAGRAD_KEY,
    GLOBAL_EMB_KEY,
    RELATION_ADAGRAD_KEY,
    RELATION_PARAMS_KEY,
    Position,
    VersionManifest,
    VersionWriter,
    adagrad_key,
    collect_garbage,
    emb_key,
    epoch_progress,
    load_good_version,
    read_current,
    read_partition,
    remove_uncommitted,
    write_partition,
)
from bigembed.checkpoint.run import (
    append_stats,
    check_same_data,
    config_conflicts,
    describe_changes,
    exclusive_run,
    is_run,
    read_evals,
    read_run_config,
    write_run_config,
)
from bigembed.checkpoint.versions import check_position, committed_versions, next_version, version_dir
from bigembed.config import Config, config_to_dict, flatten, load_config
from bigembed.errors import BigembedError, CheckpointError, ConfigConflictError, ConfigError, TrainingDivergedError
from bigembed.progress import plural, progress_bar
from bigembed.scheduler import PartitionBuffer
from bigembed.scheduler.epoch import chunk_size, epoch_visits, negatives_from_every_partition, prefetches
from bigembed.scheduler.memory import MemoryModel, choose_buffer, peak_rss_bytes, resolve_workers
from bigembed.storage.atomic import atomic_write_bytes
from bigembed.storage.data_manifest import DataManifest, read_data_manifest
from bigembed.storage.dtypes import all_finite, dtype_name, from_numpy, itemsize, storage_dtype, to_numpy
from bigembed.storage.edges import Bucket, EdgeArrays, read_edges
from bigembed.trainer import BucketTrainer, Model, PartitionState, RelationState, bucket_seed, initial_params, native
from bigembed.trainer.allocator import keep_freed_buffers
from bigembed.trainer.device import training_device

Log = Callable[[str], None]


@dataclass(frozen=True)
class TrainResult:
    version: int
    epochs_done: int
    resumed_from: Position | None
    stopped: bool = False
    quiet: bool = False  # a rank other than 0 of several: rank 0 reports for the job


def _init_seed(seed: int, partition: int) -> int:
    return int(np.random.SeedSequence([seed, 1_000_003, partition]).generate_state(1, np.uint64)[0] >> 1)


def _relation_seed(seed: int) -> int:
    return int(np.random.SeedSequence([seed, 2_000_003]).generate_state(1, np.uint64)[0] >> 1)


def _create_run(run_dir: Path, config: Config, data: DataManifest) -> VersionManifest:
    """Write config.json and version v0 (random initial embeddings), one partition at a time."""
    run_dir.mkdir(parents=True, exist_ok=True)
    write_run_config(run_dir, config_to_dict(config), data)
    writer = VersionWriter(run_dir, None, 0)
    for p, rows in enumerate(data.entity_counts):
        gen = torch.Generator().manual_seed(_init_seed(config.training.seed, p))
        state = PartitionState.initial(rows, config.model.dim, config.model.init_scale, gen,
                                       config.training.optimizer == "adagrad",
                                       storage_dtype(config.training.storage_dtype))
        write_partition(writer.write, data, p, to_numpy(state.emb), emb_key)
        write_partition(writer.write, data, p, state.adagrad.numpy(), adagrad_key)
    m = config.model
    params = initial_params(Model.for_data(config, data).specs, m.dim,
                            m.init_scale if m.relation_init == "random" else 0.0,
                            torch.Generator().manual_seed(_relation_seed(config.training.seed)))
    if params.numel():
        writer.write(RELATION_PARAMS_KEY, params.numpy())
        writer.write(RELATION_ADAGRAD_KEY, np.zeros(params.shape, np.float32))
    if m.global_emb:  # zeros: the model starts as if there were none (as PyTorch-BigGraph's)
        writer.write(GLOBAL_EMB_KEY, np.zeros((len(data.entity_types), m.dim), np.float32))
        writer.write(GLOBAL_ADAGRAD_KEY, np.zeros((len(data.entity_types), m.dim), np.float32))
    return writer.commit(Position(0, 0), {"epochs_done": 0})


def _resolve_config(run_dir: Path, data: DataManifest, config_file: Path | None,
                    overrides: dict[str, Any], override: bool) -> tuple[Config, bool]:
    """The config to use and whether the run already exists (refusing conflicts). A RUN in
    which nothing was ever committed (its first start failed or was killed) takes the new
    settings: no stored shard depends on the old ones."""
    if not is_run(run_dir) or not _has_commits(run_dir):
        if not is_run(run_dir) and run_dir.exists() and any(p.name != ".lock" for p in run_dir.iterdir()):
            raise BigembedError(f"{run_dir}: exists and is not a bigembed RUN directory; choose another -o")
        config = load_config(config_file, overrides)
        Model.for_data(config, data)  # per-relation settings must name real relations and types
        return config, False
    saved = read_run_config(run_dir)
    check_same_data(run_dir, saved, data)
    config = load_config(config_file, overrides, base=flatten(saved["config"]))
    needs, fixed = config_conflicts(saved["config"], config_to_dict(config))
    if fixed:
        raise ConfigConflictError(
            f"{run_dir}: cannot change {describe_changes(fixed, saved['config'], config_to_dict(config))} "
            "in an existing run (the stored shards depend on it); start a new RUN directory"
        )
    if needs and not override:
        raise ConfigConflictError(
            f"{run_dir}: settings differ from the saved run: "
            f"{describe_changes(needs, saved['config'], config_to_dict(config))}; "
            "pass --override to continue with the new values, or drop them"
        )
    write_run_config(run_dir, config_to_dict(config), data)
    return config, True


def _has_commits(run_dir: Path) -> bool:
    """Whether a version was ever committed in ``run_dir`` (a CURRENT, or a version's manifest)."""
    return (run_dir / "CURRENT").exists() or (run_dir / "CURRENT").is_symlink() or bool(committed_versions(run_dir))


class _Session:
    """Mutable state of one training session: the staged version and the buffer."""

    def __init__(self, run_dir: Path, data: DataManifest, config: Config, base: VersionManifest,
                 device: torch.device | None = None, version: int | None = None,
                 capacity: int | None = None) -> None:
        """``version``: the number of the version to stage (default: past every folder; the
        ranks of a distributed run are given rank 0's); ``capacity``: the buffer's."""
        self.run_dir, self.data, self.config = run_dir, data, config
        self.device = torch.device("cpu") if device is None else device  # where the buffer's partitions live
        self.base = base
        # ``base`` was verified shard by shard (resume) or just written: trust its shards
        self.writer = VersionWriter(run_dir, base, next_version(run_dir) if version is None else version,
                                    {e["path"] for e in base.shards.values()})
        self.buffer: PartitionBuffer[PartitionState] = PartitionBuffer(
            capacity or config.training.buffer_partitions, self._load, self._store)
        self.hash_evictions = False  # a distributed rank hashes what it writes back (another rank reads it)
        self.keys_of: dict[int, set[str]] = {}  # partition -> the shard keys staged for it
        self.model = Model.for_data(config, data)
        self.relations = self._load_relations()
        self.last_commit = time.monotonic()
        self.last_commit_seconds = 0.0  # how long the last commit took (checkpoint.max_commit_share)
        self.commit_seconds = 0.0  # all commits of this session together (each epoch's record takes its part)
        self._spare: np.ndarray | None = None  # an evicted partition's rows, for the next load to reuse
        self.stop_requested: str | None = None  # set by SIGINT/SIGTERM: commit, then stop
        self.evals = read_evals(run_dir)

    def pinned(self) -> tuple[int, ...]:
        """Versions kept whatever their age: the best one on the validation split."""
        best = self.evals.get("best")
        return (int(best["version"]),) if best else ()

    def _load(self, p: int) -> PartitionState:
        # read into the rows of the partition evicted just before, where they fit: a fresh
        # 256 MB array costs its page faults on every load (measured at P=16, c=4)
        spare, self._spare = self._spare, None
        start, stop = self.data.type_ranges(p)[0]
        if spare is not None and (spare.shape[0] != stop - start or self.device.type != "cpu"):
            spare = None  # another size, or bound for a GPU: free it before a fresh array is allocated
        read = self.writer.read if spare is None else functools.partial(self.writer.read, out=spare)
        emb = read_partition(read, self.data, p, emb_key)
        want = self.config.training.storage_dtype
        if dtype_name(emb) != want:
            raise CheckpointError(f"{self.run_dir}: partition {p}'s embeddings are stored as {dtype_name(emb)}, "
                                  f"but the run's training.storage_dtype is {want}")
        ada = read_partition(self.writer.read, self.data, p, adagrad_key)
        ranges = tuple(self.data.type_ranges(p)) if self.data.typed else None
        return PartitionState(from_numpy(emb).to(self.device), torch.from_numpy(ada).to(self.device), ranges)

    def _store(self, p: int, state: PartitionState, evicted: bool) -> None:
        # an eviction's copy may be overwritten before the next commit: hash it then, if it stays;
        # a commit's flush hashes from memory at once (cheaper than reading the shard back)
        def write(key: str, array: np.ndarray) -> None:
            self.writer.write(key, array, hash_now=not evicted or self.hash_evictions)
            self.keys_of.setdefault(p, set()).add(key)

        rows = to_numpy(state.emb.cpu())  # no copy on the CPU
        if not all_finite(rows):  # a backstop: the loss check after each slab catches most divergence first
            raise TrainingDivergedError(
                f"partition {p}: embeddings became NaN or infinite since v{self.base.version} (training "
                f"diverged); nothing was committed, v{self.base.version} stays CURRENT: lower training.lr")
        write_partition(write, self.data, p, rows, emb_key)
        write_partition(write, self.data, p, state.adagrad.cpu().numpy(), adagrad_key)
        # evicted: nothing reads these host rows now (on a GPU they are a fresh copy, not reused)
        if evicted and len(self.data.entity_types) == 1 and self.device.type == "cpu":
            self._spare = rows

    def _load_relations(self) -> RelationState:
        specs = self.model.specs

        def read(key: str) -> torch.Tensor | None:
            return torch.from_numpy(self.writer.read(key)).to(self.device) if key in self.base.shards else None

        params, adagrad = read(RELATION_PARAMS_KEY), read(RELATION_ADAGRAD_KEY)
        globals_ = read(GLOBAL_EMB_KEY) if self.config.model.global_emb else None
        if self.config.model.global_emb and globals_ is None:
            raise CheckpointError(f"{self.run_dir}: v{self.base.version} has no {GLOBAL_EMB_KEY!r} shard, but "
                                  "model.global_emb is on (the RUN was created without it)")
        return RelationState(specs, torch.zeros(0) if params is None else params,
                             torch.zeros(0) if adagrad is None else adagrad,
                             globals_, None if globals_ is None else read(GLOBAL_ADAGRAD_KEY))

    def commit(self, position: Position, extra: dict[str, Any] | None = None,
               in_use: tuple[int, ...] = ()) -> VersionManifest:
        """Commit what is trained so far as ``position``. ``in_use``: partitions a bucket in
        progress goes on training after the commit (written now, and dirty again after)."""
        started = time.monotonic()
        self.buffer.flush()  # waits for a background write-back first
        self.buffer.mark_dirty(in_use)
        self.write_shared()
        manifest = self.writer.commit(position, {"epochs_done": position.epoch, **(extra or {})})
        collect_garbage(self.run_dir, manifest, self.config.checkpoint.keep_versions, self.pinned())
        self.advance(manifest, self.writer.successor(manifest))
        self.last_commit = time.monotonic()
        self.last_commit_seconds = self.last_commit - started
        self.commit_seconds += self.last_commit_seconds
        return manifest

    def advance(self, manifest: VersionManifest, writer: VersionWriter | None = None) -> None:
        """Go on from the committed ``manifest`` (a distributed rank's: rank 0 committed it,
        from shards every rank wrote and hashed, so all of them are trusted)."""
        self.base = manifest
        self.writer = writer or VersionWriter(self.run_dir, manifest, manifest.version + 1,
                                              self.writer.trusted | {e["path"] for e in manifest.shards.values()})
        self.keys_of.clear()

    def write_shared(self) -> None:
        """Stage the relation parameters and global vectors, refusing non-finite ones."""
        rel = self.relations
        shared = [("relation parameters", rel.params, rel.adagrad, RELATION_PARAMS_KEY, RELATION_ADAGRAD_KEY),
                  ("the global vectors (model.global_emb)", rel.globals, rel.globals_adagrad, GLOBAL_EMB_KEY,
                   GLOBAL_ADAGRAD_KEY)]
        for what, values, state, key, state_key in shared:
            if values is None or state is None or not values.numel():
                continue
            if not bool(torch.isfinite(values).all()):
                raise TrainingDivergedError(
                    f"{what} became NaN or infinite since v{self.base.version}; nothing was committed, "
                    f"v{self.base.version} stays CURRENT: lower training.relation_lr")
            self.writer.write(key, values.cpu().numpy())
            self.writer.write(state_key, state.cpu().numpy())


def _train_epoch(session: _Session, trainer: BucketTrainer, epoch: int, start: Position, log: Log,
                 show_progress: bool) -> bool:
    """Train the rest of ``epoch`` from ``start`` (a visit and a slab of it); False when
    stopped by a signal."""
    config, data = session.config, session.data
    chunks = config.training.edge_chunks
    visits = epoch_visits(config.training, data.num_partitions, epoch)
    counts = [chunk_size(data.edge_count("train", b), c, chunks) for b, c in visits]
    upcoming = [(b.lhs, b.rhs) if n else () for (b, _), n in zip(visits, counts, strict=True)]  # buffer needs
    total = sum(counts)
    done = sum(counts[: start.bucket])
    everywhere = negatives_from_every_partition(config.training, data.num_partitions)
    loss_sum = 0.0
    # visits after the next one that a distributed run trained (or began) before it committed
    skip, partial = (epoch_progress(session.run_dir, session.base, len(visits)) if start == session.base.position
                     else (set(), {}))
    partial[start.bucket] = start.slab
    done += sum(counts[i] for i in skip)
    loads0, prefetched0, io_wait = session.buffer.loads, session.buffer.prefetched, 0.0
    commits0 = session.commit_seconds
    began = time.monotonic()
    with progress_bar(total, f"epoch {epoch + 1}/{config.training.epochs}", "edge", show_progress,
                      initial=done) as bar:
        for k in range(start.bucket, len(visits)):
            bucket, chunk = visits[k]
            count = counts[k] if k not in skip else 0
            if count:
                waited = time.perf_counter()
                session.buffer.acquire([bucket.lhs, bucket.rhs], upcoming, k + 1)
                waited = time.perf_counter() - waited
                io_wait += waited
                if prefetches(config.training):
                    session.buffer.prefetch(upcoming, k + 1, (bucket.lhs, bucket.rhs))
                extras = None
                if everywhere:  # every other partition is a source of negatives too
                    others = [p for p in range(data.num_partitions) if p not in (bucket.lhs, bucket.rhs)]
                    session.buffer.acquire(others)
                    extras = [session.buffer[p] for p in others]
                edges = visit_edges(data, bucket, chunk, chunks)
                in_use = tuple(session.buffer.resident()) if everywhere else (bucket.lhs, bucket.rhs)
                stats = trainer.train_bucket(edges, session.buffer[bucket.lhs], session.buffer[bucket.rhs],
                                             session.relations, bucket_seed(config.training.seed, epoch, k), extras,
                                             partial.pop(k, 0),
                                             _slab_hook(session, epoch, k, len(visits), bucket, in_use, log,
                                                        _later(skip, partial, k), bar.update))
                loss_sum += stats.loss
                append_stats(session.run_dir, {
                    "epoch": epoch, "bucket_index": k, "lhs": bucket.lhs, "rhs": bucket.rhs, "edge_chunk": chunk,
                    "edges": stats.edges, "loss": stats.loss / max(1, stats.edges),
                    "seconds": round(stats.seconds, 4), "io_wait_s": round(waited, 4),
                    "edges_per_s": round(stats.edges / max(stats.seconds, 1e-9), 1),
                    **({} if stats.stopped_at is None else {"stopped_at_slab": stats.stopped_at}),
                })
                bar.set_postfix(bucket=f"{k + 1}/{len(visits)}", loss=f"{stats.loss / max(1, stats.edges):.4f}")
                progress.detail(f"epoch {epoch + 1}, bucket {k + 1}/{len(visits)} ({bucket.lhs}, {bucket.rhs}): "
                                f"{stats.edges} edges, loss {stats.loss / max(1, stats.edges):.4f}, "
                                f"{stats.seconds:.2f} s")
                if stats.stopped_at is not None:  # stopped by a signal, committed inside the bucket
                    return False
            last = k + 1 == len(visits)
            position = Position(epoch + 1, 0) if last else Position(epoch, k + 1, partial.get(k + 1, 0))
            if last or _commit_due(session):
                manifest = session.commit(position, _later(skip, partial, k + 1))
                if not last:
                    log(f"committed v{manifest.version} at epoch {epoch + 1}, bucket {k + 1}/{len(visits)} "
                        f"({session.last_commit_seconds:.1f} s)")
            if session.stop_requested:
                return False
    seconds = time.monotonic() - began
    loads, prefetched = session.buffer.loads - loads0, session.buffer.prefetched - prefetched0
    append_stats(session.run_dir, {"epoch_end": {
        "epoch": epoch, "edges": total - done, "seconds": round(seconds, 4), "io_wait_s": round(io_wait, 4),
        "commit_s": round(session.commit_seconds - commits0, 4), "loads": loads, "prefetched": prefetched,
        "max_rss_bytes": peak_rss_bytes()}})
    io = ""
    if data.num_partitions > 1:
        io = f" ({loads} partition loads, {prefetched} in the background; {io_wait:.1f} s waiting for them)"
    log(f"epoch {epoch + 1}/{config.training.epochs}: {total} edges in {seconds:.1f} s "
        f"({(total - done) / max(seconds, 1e-9):,.0f} edges/s), mean loss {loss_sum / max(1, total - done):.4f}, "
        f"committed v{session.base.version}{io}")
    return True


def visit_edges(data: DataManifest, bucket: Bucket, chunk: int, chunks: int) -> EdgeArrays:
    """The training edges of a visit: chunk ``chunk`` of ``chunks`` of ``bucket`` (memory-mapped)."""
    edges = read_edges(data.path.parent, "train", bucket, data.edge_count("train", bucket), data.weighted,
                       data.edge_dtypes)
    if chunks == 1:
        return edges
    return EdgeArrays(edges.lhs[chunk::chunks], edges.rhs[chunk::chunks], edges.rel[chunk::chunks],
                      None if edges.weight is None else edges.weight[chunk::chunks])


def _commit_due(session: _Session) -> bool:
    """Whether to commit now: a stop was asked for, or ``checkpoint.interval_seconds`` passed,
    stretched so that committing takes at most ``checkpoint.max_commit_share`` of the time (a
    40 s commit of a 10 GB table, with the default 5%, comes every 12.7 min rather than every 5)."""
    return bool(session.stop_requested) or time.monotonic() - session.last_commit >= commit_interval(
        session.config.checkpoint.interval_seconds, session.config.checkpoint.max_commit_share,
        session.last_commit_seconds)


def commit_interval(interval: float, share: float, last_commit_seconds: float) -> float:
    """Seconds of training between commits: ``interval``, or longer when the last commit took
    so long that committing every ``interval`` would spend more than ``share`` of the time on it."""
    if interval <= 0 or share <= 0:
        return interval
    return max(interval, last_commit_seconds * (1 - share) / share)


def _later(done: set[int], partial: dict[int, int], k: int) -> dict[str, Any]:
    """The manifest fields of a position at visit ``k`` for the visits after it already
    trained (``done``) or begun (``partial``), which a distributed run may leave."""
    out: dict[str, Any] = {}
    if any(i > k for i in done):
        out["visits_done"] = sorted(i for i in done if i > k)
    if any(i > k and s for i, s in partial.items()):
        out["visits_partial"] = {str(i): s for i, s in sorted(partial.items()) if i > k and s}
    return out


def _slab_hook(session: _Session, epoch: int, k: int, visits: int, bucket: Bucket, in_use: tuple[int, ...],
               log: Log, later: dict[str, Any] | None = None,
               moved: Callable[[int], None] | None = None) -> Callable[[int, int, float, int], bool]:
    """What runs after each slab of visit ``k``: stop on a non-finite loss (before anything of
    it is committed), move the progress bar by the slab's edges (``moved``), and inside a
    bucket of several slabs commit when due or asked to stop, so one huge bucket (P = 1) still
    shows its progress, commits every ``interval_seconds`` and stops promptly."""

    def after_slab(slabs_done: int, slabs: int, loss: float, edges: int) -> bool:
        if not math.isfinite(loss):
            raise TrainingDivergedError(
                f"epoch {epoch + 1}, bucket {k + 1}/{visits} (partitions {bucket.lhs}, {bucket.rhs}), slab "
                f"{slabs_done}/{slabs}: the loss is {loss} (training diverged); nothing of it was committed, "
                f"v{session.base.version} stays CURRENT: lower training.lr (now {session.config.training.lr})")
        if moved is not None:  # the bar moves within a bucket (P = 1 is one bucket an epoch)
            moved(edges)
        if slabs_done == slabs or not _commit_due(session):
            return False  # the end of the bucket: the epoch loop commits there
        manifest = session.commit(Position(epoch, k, slabs_done), later, in_use=in_use)
        log(f"committed v{manifest.version} at epoch {epoch + 1}, bucket {k + 1}/{visits}, "
            f"slab {slabs_done}/{slabs} ({session.last_commit_seconds:.1f} s)")
        return bool(session.stop_requested)

    return after_slab


def _validate(session: _Session, epoch: int, log: Log, show_progress: bool) -> bool:
    """Rank the validation split after ``epoch`` when due; False when early stopping says stop."""
    from bigembed.evaluation.validation import validate

    return validate(session.run_dir, session.base, session.data, session.config, session.evals, epoch, log,
                    show_progress)


@contextmanager
def _stop_on_signals(session: _Session, log: Log) -> Iterator[None]:
    """First SIGINT/SIGTERM: finish the slab (at most ``SLAB_EDGES`` edges), commit, stop. A
    second SIGINT aborts at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def request(signum: int, _frame: object) -> None:
        name = signal.Signals(signum).name
        if session.stop_requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        session.stop_requested = name
        log(f"{name}: finishing the current slab of edges and committing (press Ctrl-C again to abort)")

    previous = {sig: signal.signal(sig, request) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _memory_model(config: Config) -> MemoryModel:
    """The memory model (scheduler.memory) of training with ``config``."""
    t = config.training
    all_negs = t.all_negatives or any(r.all_negatives for r in config.relations.values())
    return MemoryModel(config.model.dim, t.optimizer == "adagrad", all_negs, itemsize(t.storage_dtype),
                       resolve_workers(t))


def _memory_overrides(data: DataManifest, run_dir: Path, config_file: Path | None, overrides: dict[str, Any],
                      budget: int, log: Log) -> dict[str, Any]:
    """``training.buffer_partitions`` (and the beta order) for a memory budget, said aloud."""
    base = flatten(read_run_config(run_dir)["config"]) if is_run(run_dir) else None
    config = load_config(config_file, overrides, base=base)
    model = _memory_model(config)
    biggest = max(data.bucket_counts["train"].values(), default=0)
    choice = choose_buffer(model, data.entity_counts, biggest, budget)
    c = max(2, min(choice.c, data.num_partitions))
    out: dict[str, Any] = {"training.buffer_partitions": c}
    order = config.training.bucket_order
    if 2 < c < data.num_partitions and order == "inside_out":
        out["training.bucket_order"] = order = "beta"
    log(f"{choice.message}: training.buffer_partitions={c}, bucket order {order}")
    return out


def _check_startable(config: Config, data: DataManifest) -> None:
    """Refuse, before any work, a run that would fail later: a validation split that DATA
    lacks, all-negatives partitions the buffer cannot hold, an unknown device, or settings
    whose memory cannot fit (a dimension or a number of negatives too large)."""
    t = config.training
    if t.eval_every and t.eval_split not in data.bucket_counts:
        raise ConfigError(
            f"training.eval_every = {t.eval_every} validates on training.eval_split = {t.eval_split!r}, but "
            f"{data.path.parent} has no split named {t.eval_split!r} (it has: {', '.join(data.bucket_counts)}); "
            f"import one with --split {t.eval_split}=FILE, or set training.eval_every=0")
    negatives_from_every_partition(config.training, data.num_partitions)
    if training_device(t).type == "cpu":
        _check_memory(config, data)


def _check_memory(config: Config, data: DataManifest) -> None:
    """Estimate peak memory (scheduler.memory) and refuse in one line what cannot fit."""
    from bigembed.scheduler.memory import available_memory, batch_bytes, human

    free = available_memory()
    if free is None:
        return
    t, m = config.training, config.model
    model = _memory_model(config)
    rows = max(data.entity_counts, default=0)
    c = min(t.buffer_partitions, data.num_partitions) if data.num_partitions > 1 else 1
    table = model.estimate(rows, c, max(data.bucket_counts["train"].values(), default=0))
    batches = model.workers * batch_bytes(m.dim, t.batch_size, t.chunk_size, t.negatives,
                                          rows if model.all_negatives else 0)
    workers = model.workers
    if table + batches > free:
        fix = ("lower training.negatives, training.batch_size or model.dim" if batches > table else
               "lower model.dim, or import with more partitions (`bigembed import --memory SIZE --dim D`)")
        raise ConfigError(
            f"model.dim = {m.dim}, training.negatives = {t.negatives}, training.batch_size = {t.batch_size}: "
            f"training needs about {human(table + batches)} ({human(table)} for {c} partition(s) of up to {rows} "
            f"rows and fixed overhead, {human(batches)} for {workers} worker(s)' batches), but about "
            f"{human(free)} is available; {fix}")


def train(data_dir: Path, run_dir: Path, config_file: Path | None = None,
          overrides: dict[str, Any] | None = None, override: bool = False,
          log: Log = print, show_progress: bool = True, memory: int | None = None) -> TrainResult:
    """Train (or resume training of) ``run_dir`` on the DATA at ``data_dir``.

    Holds ``RUN/.lock`` throughout, so a second trainer on the same RUN is refused.
    ``memory``: a budget in bytes; the buffer size (and order) are chosen to fit it.
    """
    from bigembed import distributed

    if distributed.launched():  # one rank of several, started by torchrun
        return distributed.train(data_dir, run_dir, config_file, overrides, override, log, show_progress, memory)
    data_dir, run_dir = Path(data_dir), Path(run_dir)
    data = read_data_manifest(data_dir)
    data.require_split("train")
    keep_freed_buffers()

    def resolve() -> tuple[Config, bool]:
        return _resolve_run(data, run_dir, config_file, dict(overrides or {}), override, memory, log)

    # a new run's settings are refused before anything is created; a saved run's are resolved
    # under its lock (resolving may rewrite its config.json)
    resolved = None if is_run(run_dir) else resolve()
    with exclusive_run(run_dir):
        if resolved is None or is_run(run_dir):  # resuming, or another process created it meanwhile
            resolved = resolve()
        return _train_locked(data, run_dir, *resolved, log, show_progress)


def _resolve_run(data: DataManifest, run_dir: Path, config_file: Path | None, overrides: dict[str, Any],
                 override: bool, memory: int | None, log: Log) -> tuple[Config, bool]:
    """The one place a training command's config is decided, once a command: the saved run's
    config (when resuming) under the config file and ``--set`` values, the buffer (and order)
    a memory budget allows, checked against the saved run and refused when it cannot start.
    Returns the config and whether the run already exists."""
    if memory is not None:
        overrides = {**overrides, **_memory_overrides(data, run_dir, config_file, overrides, memory, log)}
    config, exists = _resolve_config(run_dir, data, config_file, overrides, override)
    _check_startable(config, data)  # before anything is written
    return config, exists


def _resume_version(run_dir: Path, data: DataManifest, config: Config, log: Log) -> VersionManifest:
    """The version to resume from: CURRENT's if it verifies, else the newest one that does
    (said aloud, and written into CURRENT). Only folders without a manifest (staged by an
    interrupted commit) are deleted; no complete version is."""
    visits = data.num_partitions ** 2 * config.training.edge_chunks

    def check(manifest: VersionManifest) -> None:
        check_position(run_dir, manifest, visits)
        epoch_progress(run_dir, manifest, visits)
        pos = manifest.position
        if pos.slab and pos.slab >= _slabs_of(config, data, pos):
            raise CheckpointError(
                f"{version_dir(run_dir, manifest.version)}/manifest.json: impossible training position "
                f"(epoch {pos.epoch}, bucket {pos.bucket}, slab {pos.slab}): that bucket has fewer slabs")

    try:
        current = read_current(run_dir)
    except CheckpointError:
        current = None
    if current is None and not committed_versions(run_dir):
        raise CheckpointError(f"{run_dir}: CURRENT is missing or damaged and no version has a manifest "
                              "(the checkpoints were removed); start a new RUN directory")
    base = load_good_version(run_dir, log, check)
    remove_uncommitted(run_dir)
    if base.version != current:
        path = run_dir / "CURRENT"
        if path.is_dir() and not path.is_symlink():  # kept for a look, out of the way of the commit protocol
            aside = path.with_name(f"CURRENT.damaged-{int(time.time())}")
            path.rename(aside)
            log(f"{path}: was a directory; moved to {aside.name}")
        atomic_write_bytes(path, f"v{base.version}\n".encode())
        log(f"{path}: now names v{base.version}; the other versions are left as they were")
    return base


def _slabs_of(config: Config, data: DataManifest, pos: Position) -> int:
    """Slabs of the bucket visit at ``pos`` (how many sub-bucket positions it has)."""
    from bigembed.trainer.bucket import SLAB_EDGES

    bucket, chunk = epoch_visits(config.training, data.num_partitions, pos.epoch)[pos.bucket]
    return -(-chunk_size(data.edge_count("train", bucket), chunk, config.training.edge_chunks) // SLAB_EDGES)


def _train_locked(data: DataManifest, run_dir: Path, config: Config, exists: bool, log: Log,
                  show_progress: bool) -> TrainResult:
    device = training_device(config.training)
    # which kernels run, decided once (the C ones built now), before anything is written
    kernels = native.choose(config.training.kernels, config.training.ranking_gradients, device.type)
    opened = _open_run(data, run_dir, config, exists, log)
    if isinstance(opened, TrainResult):
        return opened
    base, resumed = opened
    session = _Session(run_dir, data, config, base, device)
    trainer = BucketTrainer(session.model, config.training, config.model.reciprocal, kernels)
    if device.type == "cuda":
        log(f"training on {device} ({torch.cuda.get_device_name(device)}): partitions in GPU memory, one worker")
    else:
        log(f"{trainer.workers} worker thread(s)"
            + (" (all-negatives batches use one worker and every core)" if trainer.workers == 1
               and resolve_workers(config.training) > 1 else ""))
    log(trainer.kernels.why)
    append_stats(run_dir, {"start": {"version": base.version, "device": str(device), "workers": trainer.workers,
                                     **trainer.kernels.record()}})
    try:
        with _stop_on_signals(session, log):
            for epoch in range(base.position.epoch, config.training.epochs):
                start = base.position if epoch == base.position.epoch else Position(epoch, 0)
                if not _train_epoch(session, trainer, epoch, start, log, show_progress):
                    break
                if not _validate(session, epoch, log, show_progress):
                    break
    finally:
        trainer.close()
        session.buffer.close()
    return _finish(session, resumed, log)


def _finish(session: _Session, resumed: Position | None, log: Log) -> TrainResult:
    pos = session.base.position
    stopped = session.stop_requested is not None and pos.epoch < session.config.training.epochs
    if stopped:  # a signal during the very last bucket just lets training finish
        log(f"stopped by {session.stop_requested}: committed v{session.base.version} at epoch "
            f"{pos.epoch + 1}, bucket {pos.bucket + 1}{f', slab {pos.slab}' if pos.slab else ''}; "
            "rerun the same command to resume")
    return TrainResult(session.base.version, pos.epoch, resumed, stopped=stopped)


def _open_run(data: DataManifest, run_dir: Path, config: Config, exists: bool,
              log: Log) -> tuple[VersionManifest, Position | None] | TrainResult:
    """Resume ``run_dir`` (its version to go on from, and the position resumed), or create it
    (version 0, None); a :class:`TrainResult` when there is nothing left to train."""
    resumed: Position | None = None
    if exists:
        base = _resume_version(run_dir, data, config, log)
        resumed = base.position
        epochs = config.training.epochs
        if base.position.epoch >= epochs:
            log(f"{run_dir}: already trained {base.position.epoch} epochs (v{base.version}); "
                "nothing to do (raise --epochs to train further)")
            return TrainResult(base.version, base.position.epoch, resumed)
        evals = read_evals(run_dir)
        if evals.get("early_stopped") and config.training.early_stopping:
            best = evals["best"]
            log(f"{run_dir}: stopped early at epoch {base.position.epoch} (best {config.training.eval_split} "
                f"MRR {best['mrr']:.4f} at epoch {best['epoch']}, v{best['version']}); nothing to do "
                "(set training.early_stopping=0 to train on)")
            return TrainResult(base.version, base.position.epoch, resumed)
        slab = f", slab {base.position.slab}" if base.position.slab else ""
        log(f"resuming {run_dir} from v{base.version}: epoch {base.position.epoch + 1}, "
            f"bucket {base.position.bucket + 1} of {data.num_partitions ** 2 * config.training.edge_chunks}{slab}")
    else:
        if is_run(run_dir):
            log(f"{run_dir}: no version was ever committed (the first start failed or was interrupted); "
                "starting over")
        remove_uncommitted(run_dir)
        base = _create_run(run_dir, config, data)
        log(f"started {run_dir}: {data.num_entities} nodes in {plural(data.num_partitions, 'partition')}, "
            f"{data.num_edges('train')} training edges, dim {config.model.dim}")
    return base, resumed
