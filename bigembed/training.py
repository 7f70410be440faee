"""`bigembed train`: start or resume a run, composing the separate units.

start/resume (checkpoint) -> order buckets (scheduler) -> load partitions (buffer)
-> train bucket (trainer) -> write back + commit (checkpoint). Each unit lives in
its own package; this module only wires them together.
"""

from __future__ import annotations

import functools
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

from bigembed.checkpoint import (
    RELATION_ADAGRAD_KEY,
    RELATION_PARAMS_KEY,
    Position,
    VersionManifest,
    VersionWriter,
    adagrad_key,
    collect_garbage,
    emb_key,
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
    write_evals,
    write_run_config,
)
from bigembed.checkpoint.versions import list_versions, version_dir
from bigembed.config import Config, config_to_dict, flatten, load_config
from bigembed.errors import BigembedError, CheckpointError, ConfigConflictError
from bigembed.progress import progress_bar
from bigembed.scheduler import PartitionBuffer, order_buckets
from bigembed.scheduler.memory import MemoryModel, choose_buffer
from bigembed.storage.data_manifest import DataManifest, read_data_manifest
from bigembed.storage.dtypes import dtype_name, from_numpy, itemsize, storage_dtype, to_numpy
from bigembed.storage.edges import Bucket, EdgeArrays, read_edges
from bigembed.trainer import BucketTrainer, Model, PartitionState, RelationState, bucket_seed, initial_params
from bigembed.trainer.allocator import keep_freed_buffers
from bigembed.trainer.bucket import resolve_workers
from bigembed.trainer.device import training_device

Log = Callable[[str], None]


@dataclass(frozen=True)
class TrainResult:
    version: int
    epochs_done: int
    resumed_from: Position | None
    stopped: bool = False


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
    return writer.commit(Position(0, 0), {"epochs_done": 0})


def _resolve_config(run_dir: Path, data: DataManifest, config_file: Path | None,
                    overrides: dict[str, Any], override: bool) -> tuple[Config, bool]:
    """The config to use and whether the run already exists (refusing conflicts)."""
    if not is_run(run_dir):
        if run_dir.exists() and any(p.name != ".lock" for p in run_dir.iterdir()):
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


class _Session:
    """Mutable state of one training session: the staged version and the buffer."""

    def __init__(self, run_dir: Path, data: DataManifest, config: Config, base: VersionManifest,
                 device: torch.device | None = None) -> None:
        self.run_dir, self.data, self.config = run_dir, data, config
        self.device = torch.device("cpu") if device is None else device  # where the buffer's partitions live
        self.base = base
        # ``base`` was verified shard by shard (resume) or just written: trust its shards
        self.writer = VersionWriter(run_dir, base, base.version + 1, {e["path"] for e in base.shards.values()})
        self.buffer: PartitionBuffer[PartitionState] = PartitionBuffer(
            config.training.buffer_partitions, self._load, self._store)
        self.model = Model.for_data(config, data)
        self.relations = self._load_relations()
        self.last_commit = time.monotonic()
        self.flushing = False  # True while commit writes the resident partitions back
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

    def _store(self, p: int, state: PartitionState) -> None:
        # an eviction's copy may be overwritten before the next commit: hash it then, if it stays;
        # a commit's flush hashes from memory at once (cheaper than reading the shard back)
        write = functools.partial(self.writer.write, hash_now=self.flushing)
        rows = to_numpy(state.emb.cpu())  # no copy on the CPU
        write_partition(write, self.data, p, rows, emb_key)
        write_partition(write, self.data, p, state.adagrad.cpu().numpy(), adagrad_key)
        # evicted: nothing reads these host rows now (on a GPU they are a fresh copy, not reused)
        if not self.flushing and len(self.data.entity_types) == 1 and self.device.type == "cpu":
            self._spare = rows

    def _load_relations(self) -> RelationState:
        specs = self.model.specs
        if RELATION_PARAMS_KEY not in self.base.shards:
            return RelationState(specs, torch.zeros(0), torch.zeros(0))
        return RelationState(
            specs,
            torch.from_numpy(self.writer.read(RELATION_PARAMS_KEY)).to(self.device),
            torch.from_numpy(self.writer.read(RELATION_ADAGRAD_KEY)).to(self.device),
        )

    def commit(self, position: Position, extra: dict[str, Any] | None = None) -> VersionManifest:
        self.flushing = True
        try:
            self.buffer.flush()  # waits for a background write-back first
        finally:
            self.flushing = False
        if self.relations.params.numel():
            self.writer.write(RELATION_PARAMS_KEY, self.relations.params.cpu().numpy())
            self.writer.write(RELATION_ADAGRAD_KEY, self.relations.adagrad.cpu().numpy())
        manifest = self.writer.commit(position, {"epochs_done": position.epoch, **(extra or {})})
        collect_garbage(self.run_dir, manifest, self.config.checkpoint.keep_versions, self.pinned())
        self.base = manifest
        self.writer = self.writer.successor(manifest)
        self.last_commit = time.monotonic()
        return manifest


def _prefetches(config: Config) -> bool:
    """Whether partitions are loaded in the background: with the beta order and c >= 3
    (the order then leaves the last slot free for the next partition)."""
    t = config.training
    return t.prefetch and t.bucket_order == "beta" and t.buffer_partitions >= 3


def _all_negatives_partitions(config: Config, P: int) -> bool:
    """Whether every partition is a source of negatives (``training.negative_partitions``).

    Only when the buffer holds all P: drawing from just the partitions that happen to be
    resident over-samples the query's own partition (CoDEx-S, P=4, c=2: 0.389 test MRR
    against 0.421 from the answer's partition alone) and would depend on what a resumed
    run has loaded so far."""
    where, c = config.training.negative_partitions, config.training.buffer_partitions
    if where == "all" and c < P:
        raise BigembedError(f"training.negative_partitions = all needs training.buffer_partitions >= {P} "
                            f"(the number of partitions), got {c}; or use answer")
    return P > 1 and c >= P and where != "answer"


def _epoch_order(config: Config, P: int, epoch: int) -> list:
    """The epoch's buckets. With prefetching and c >= 3, the order is planned for c - 1
    partitions so the last slot is free to receive the next one in the background."""
    t = config.training
    plan_for = t.buffer_partitions - 1 if _prefetches(config) else t.buffer_partitions
    return order_buckets(P, t.bucket_order, np.random.default_rng([t.seed, epoch]), plan_for)


def _epoch_visits(config: Config, P: int, epoch: int) -> list[tuple[Bucket, int]]:
    """The epoch's (bucket, edge chunk) visits: ``training.edge_chunks`` passes over the
    bucket order, every other one reversed (its first buckets need the partitions the
    previous pass ended with)."""
    order = _epoch_order(config, P, epoch)
    n = config.training.edge_chunks
    return [(b, c) for c in range(n) for b in (order if c % 2 == 0 else order[::-1])]


def _chunk_size(count: int, chunk: int, chunks: int) -> int:
    """Edges in chunk ``chunk`` of ``chunks`` of a bucket of ``count`` edges (every
    ``chunks``-th edge from position ``chunk``, so a sorted input file still mixes)."""
    return len(range(chunk, count, chunks))


def _train_epoch(session: _Session, trainer: BucketTrainer, epoch: int, start: int, log: Log,
                 show_progress: bool) -> bool:
    """Train the rest of ``epoch`` from visit ``start``; False when stopped by a signal."""
    config, data = session.config, session.data
    chunks = config.training.edge_chunks
    visits = _epoch_visits(config, data.num_partitions, epoch)
    counts = [_chunk_size(data.edge_count("train", b), c, chunks) for b, c in visits]
    upcoming = [(b.lhs, b.rhs) if n else () for (b, _), n in zip(visits, counts, strict=True)]  # buffer needs
    total = sum(counts)
    done = sum(counts[:start])
    everywhere = _all_negatives_partitions(config, data.num_partitions)
    loss_sum = 0.0
    loads0, prefetched0, io_wait = session.buffer.loads, session.buffer.prefetched, 0.0
    with progress_bar(total, f"epoch {epoch + 1}/{config.training.epochs}", "edge", show_progress,
                      initial=done) as bar:
        for k in range(start, len(visits)):
            bucket, chunk = visits[k]
            count = counts[k]
            if count:
                waited = time.perf_counter()
                session.buffer.acquire([bucket.lhs, bucket.rhs], upcoming, k + 1)
                waited = time.perf_counter() - waited
                io_wait += waited
                if _prefetches(config):
                    session.buffer.prefetch(upcoming, k + 1, (bucket.lhs, bucket.rhs))
                extras = None
                if everywhere:  # every other partition is a source of negatives too
                    others = [p for p in range(data.num_partitions) if p not in (bucket.lhs, bucket.rhs)]
                    session.buffer.acquire(others)
                    extras = [session.buffer[p] for p in others]
                edges = read_edges(data.path.parent, "train", bucket, data.edge_count("train", bucket),
                                   data.weighted)
                if chunks > 1:
                    edges = EdgeArrays(edges.lhs[chunk::chunks], edges.rhs[chunk::chunks], edges.rel[chunk::chunks],
                                       None if edges.weight is None else edges.weight[chunk::chunks])
                stats = trainer.train_bucket(edges, session.buffer[bucket.lhs], session.buffer[bucket.rhs],
                                             session.relations, bucket_seed(config.training.seed, epoch, k), extras)
                loss_sum += stats.loss
                append_stats(session.run_dir, {
                    "epoch": epoch, "bucket_index": k, "lhs": bucket.lhs, "rhs": bucket.rhs, "edge_chunk": chunk,
                    "edges": stats.edges, "loss": stats.loss / max(1, stats.edges),
                    "seconds": round(stats.seconds, 4), "io_wait_s": round(waited, 4),
                    "edges_per_s": round(stats.edges / max(stats.seconds, 1e-9), 1),
                })
                bar.update(count)
                bar.set_postfix(bucket=f"{k + 1}/{len(visits)}", loss=f"{stats.loss / max(1, count):.4f}")
            last = k + 1 == len(visits)
            position = Position(epoch + 1, 0) if last else Position(epoch, k + 1)
            due = time.monotonic() - session.last_commit >= config.checkpoint.interval_seconds
            if last or due or session.stop_requested:
                manifest = session.commit(position)
                if not last:
                    log(f"committed v{manifest.version} at epoch {epoch + 1}, bucket {k + 1}/{len(visits)}")
            if session.stop_requested:
                return False
    io = ""
    if data.num_partitions > 1:
        loads, prefetched = session.buffer.loads - loads0, session.buffer.prefetched - prefetched0
        io = f" ({loads} partition loads, {prefetched} in the background; {io_wait:.1f} s waiting for them)"
    log(f"epoch {epoch + 1}/{config.training.epochs}: {total} edges, "
        f"mean loss {loss_sum / max(1, total - done):.4f}, committed v{session.base.version}{io}")
    return True


def _validate(session: _Session, epoch: int, log: Log, show_progress: bool) -> bool:
    """Rank the validation split after ``epoch`` when due; False when early stopping says stop."""
    from bigembed.evaluation import evaluate_full

    t = session.config.training
    if not t.eval_every or (epoch + 1) % t.eval_every:
        return True
    total = 2 * session.data.num_edges(t.eval_split) * session.data.num_partitions
    start = time.perf_counter()
    with progress_bar(total, f"validate {t.eval_split}", "query", show_progress) as bar:
        metrics = evaluate_full(session.run_dir, session.base, session.data, session.config, t.eval_split,
                                progress=bar.update)
    record = {"epoch": epoch + 1, "version": session.base.version, "split": t.eval_split,
              "mrr": metrics["mrr"], "hits@1": metrics["hits@1"], "hits@3": metrics["hits@3"],
              "hits@10": metrics["hits@10"], "mean_rank": metrics["mean_rank"],
              "seconds": round(time.perf_counter() - start, 2)}
    append_stats(session.run_dir, {"eval": record})
    evals = session.evals
    evals["history"].append(record)
    best = evals.get("best")
    if best is None or record["mrr"] > best["mrr"]:
        evals["best"] = best = record
    since = sum(1 for r in evals["history"] if r["epoch"] > best["epoch"])
    stop = bool(t.early_stopping) and since >= t.early_stopping
    evals["early_stopped"] = stop
    write_evals(session.run_dir, evals)
    collect_garbage(session.run_dir, session.base, session.config.checkpoint.keep_versions, session.pinned())
    log(f"epoch {epoch + 1}: {t.eval_split} filtered MRR {record['mrr']:.4f}, Hits@10 {record['hits@10']:.4f} "
        f"(best {best['mrr']:.4f} at epoch {best['epoch']}, v{best['version']})")
    if stop:
        log(f"early stopping: no improvement in {since} evaluation(s); the best checkpoint is "
            f"v{best['version']} (epoch {best['epoch']}): use --version best with eval/export")
    return not stop


@contextmanager
def _stop_on_signals(session: _Session, log: Log) -> Iterator[None]:
    """First SIGINT/SIGTERM: finish the bucket, commit, stop. A second SIGINT aborts at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def request(signum: int, _frame: object) -> None:
        name = signal.Signals(signum).name
        if session.stop_requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        session.stop_requested = name
        log(f"{name}: finishing the current bucket and committing (press Ctrl-C again to abort)")

    previous = {sig: signal.signal(sig, request) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _memory_overrides(data: DataManifest, run_dir: Path, config_file: Path | None, overrides: dict[str, Any],
                      budget: int, log: Log) -> dict[str, Any]:
    """``training.buffer_partitions`` (and the beta order) for a memory budget, said aloud."""
    base = flatten(read_run_config(run_dir)["config"]) if is_run(run_dir) else None
    config = load_config(config_file, overrides, base=base)
    all_negs = config.training.all_negatives or any(r.all_negatives for r in config.relations.values())
    model = MemoryModel(config.model.dim, config.training.optimizer == "adagrad", all_negs,
                        itemsize(config.training.storage_dtype), resolve_workers(config.training))
    biggest = max(data.bucket_counts["train"].values(), default=0)
    choice = choose_buffer(model, data.entity_counts, biggest, budget)
    c = max(2, min(choice.c, data.num_partitions))
    out: dict[str, Any] = {"training.buffer_partitions": c}
    order = config.training.bucket_order
    if 2 < c < data.num_partitions and order == "inside_out":
        out["training.bucket_order"] = order = "beta"
    log(f"{choice.message}: training.buffer_partitions={c}, bucket order {order}")
    return out


def train(data_dir: Path, run_dir: Path, config_file: Path | None = None,
          overrides: dict[str, Any] | None = None, override: bool = False,
          log: Log = print, show_progress: bool = True, memory: int | None = None) -> TrainResult:
    """Train (or resume training of) ``run_dir`` on the DATA at ``data_dir``.

    Holds ``RUN/.lock`` throughout, so a second trainer on the same RUN is refused.
    ``memory``: a budget in bytes; the buffer size (and order) are chosen to fit it.
    """
    data_dir, run_dir = Path(data_dir), Path(run_dir)
    data = read_data_manifest(data_dir)
    data.require_split("train")
    if memory is not None:
        overrides = {**(overrides or {}), **_memory_overrides(data, run_dir, config_file, dict(overrides or {}),
                                                              memory, log)}
    keep_freed_buffers()
    if not is_run(run_dir):  # refuse bad settings before anything is created
        config, _ = _resolve_config(run_dir, data, config_file, dict(overrides or {}), override)
        _all_negatives_partitions(config, data.num_partitions)
        training_device(config.training)
    with exclusive_run(run_dir):
        return _train_locked(data, run_dir, config_file, dict(overrides or {}), override, log, show_progress)


def _train_locked(data: DataManifest, run_dir: Path, config_file: Path | None, overrides: dict[str, Any],
                  override: bool, log: Log, show_progress: bool) -> TrainResult:
    config, exists = _resolve_config(run_dir, data, config_file, overrides, override)
    device = training_device(config.training)  # before anything is written
    resumed: Position | None = None
    if exists and read_current(run_dir) is None:
        committed = [v for v in list_versions(run_dir) if (version_dir(run_dir, v) / "manifest.json").exists()]
        if committed:
            raise CheckpointError(
                f"{run_dir}/CURRENT: missing, but v{committed[-1]} has a manifest; "
                f"write 'v{committed[-1]}' into {run_dir}/CURRENT to resume from it"
            )
        remove_uncommitted(run_dir)  # the first start was killed before v0 was committed
        exists = False
        log(f"{run_dir}: no version was ever committed (the first start was interrupted); starting over")
    if exists:
        remove_uncommitted(run_dir)
        base = load_good_version(run_dir, log)
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
        log(f"resuming {run_dir} from v{base.version}: epoch {base.position.epoch + 1}, "
            f"bucket {base.position.bucket + 1} of {data.num_partitions ** 2 * config.training.edge_chunks}")
    else:
        base = _create_run(run_dir, config, data)
        log(f"started {run_dir}: {data.num_entities} nodes in {data.num_partitions} partitions, "
            f"{data.num_edges('train')} training edges, dim {config.model.dim}")
    session = _Session(run_dir, data, config, base, device)
    trainer = BucketTrainer(session.model, config.training, config.model.reciprocal)
    if device.type == "cuda":
        log(f"training on {device} ({torch.cuda.get_device_name(device)}): partitions in GPU memory, one worker")
    else:
        log(f"{trainer.workers} worker thread(s)"
            + (" (all-negatives batches use one worker and every core)" if trainer.workers == 1
               and resolve_workers(config.training) > 1 else ""))
    try:
        with _stop_on_signals(session, log):
            for epoch in range(base.position.epoch, config.training.epochs):
                start = base.position.bucket if epoch == base.position.epoch else 0
                if not _train_epoch(session, trainer, epoch, start, log, show_progress):
                    break
                if not _validate(session, epoch, log, show_progress):
                    break
    finally:
        trainer.close()
        session.buffer.close()
    pos = session.base.position
    stopped = session.stop_requested is not None and pos.epoch < config.training.epochs
    if stopped:  # a signal during the very last bucket just lets training finish
        log(f"stopped by {session.stop_requested}: committed v{session.base.version} at epoch "
            f"{pos.epoch + 1}, bucket {pos.bucket + 1}; rerun the same command to resume")
    return TrainResult(session.base.version, pos.epoch, resumed, stopped=stopped)
