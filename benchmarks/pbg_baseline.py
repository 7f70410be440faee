"""PyTorch-BigGraph 1.0.0 as a baseline, ranked by bigembed's own filtered full-ranking evaluator.

PBG is never a bigembed dependency: it lives in its own venv and runs as a
child process of that venv's python. Create the venv with::

    python3 -m venv /tmp/pbgvenv
    /tmp/pbgvenv/bin/pip install torch==2.13.0 'setuptools<81'
    /tmp/pbgvenv/bin/pip install torchbiggraph==1.0.0

What :func:`run_pbg` does, in a work folder:

1. imports the dataset into a bigembed DATA folder (one partition) for the
   evaluator, and into PBG's layout with PBG's own TSV importer. Every split
   is handed to the importer, so PBG knows every node bigembed ranks against
   (edges are written for each split, but only the train edges are trained on);
2. writes a PBG config (``pbg_config.py``) and a driver script
   (``pbg_driver.py``) and trains in a measured child process: total wall
   time, peak RSS (largest process of the tree, through GNU time, as for
   bigembed's own runs; PBG's Hogwild workers share the embeddings, so RSS is
   not summed) and the wall time of each epoch, from one "Starting epoch" log
   line of PBG's to the next (the last to its "Exiting"), so an epoch includes
   the checkpoint written after it;
3. reads PBG's checkpoint (HDF5), reorders its rows into bigembed's node order
   and its relation parameters into bigembed's flat layout, checks that the
   result scores triples exactly as PBG's own model does (``score check``),
   and ranks valid and test with ``bigembed.evaluation.ranking.rank_split``.

PBG conventions this relies on (read from torchbiggraph 1.0.0's model.py,
checkpoint_manager.py and import_from_tsv.py; the score check confirms them):

* Relations are static (``dynamic_relations=False``): one PBG relation type
  per dataset relation, in bigembed's relation order. In that mode PBG has one
  operator per relation and applies it to the rhs only, for positives and for
  negatives on both sides: score(h, r, t) = comparator(h, op_r(t)). That is
  exactly a bigembed model (operator on the lhs) on reversed edges, so the
  ranking uses ``reverse=True``. Dynamic relations would give every relation
  two operators (one per side, used by different negatives), which no single
  bigembed model reproduces.
* Every comparator is symmetric, so comparator(h, op_r(t)) = comparator(op_r(t), h).
* Operator parameters live in ``model.v<N>.h5`` under
  ``model/relations/<r>/operator/rhs/<name>``: ``diagonal``, ``translation``,
  ``linear_transformation`` (A, applied as A @ x, i.e. bigembed's x @ A.T: the
  same matrix), ``linear_transformation`` + ``translation`` for affine (stacked
  as A over b), ``real`` + ``imag`` for complex_diagonal. PBG's complex rows
  are real half then imaginary half and its product is the plain (unconjugated)
  one, as in bigembed, so the two halves are concatenated as they are: no
  conjugation is needed.
* PBG's ``global_emb`` (on by default) adds one learnt vector to every node's
  row before the operator; with one entity type that is folded into the rows
  (``model/entities/<entity>/global_embedding``).
* PBG holds out ``eval_fraction`` of each bucket's edges from training for its
  own sampled evaluation (0.05 by default). Here it defaults to 0, so PBG
  trains on every train edge as bigembed does; pass 0.05 for PBG's default.

Everything else is left at PBG's defaults (init_scale 1e-3, no bias, no
max_norm, hogwild_delay 2 s: the second worker starts 2 s late in the first
epoch, which is why ``epoch_wall_s`` lists every epoch and
``later_epochs_mean_s`` averages those after the first).

With ``all_negs`` PBG ignores the uniform and batch negatives (and logs a
warning per batch into ``pbg_train.log``).

Quick check with bigembed's venv (prints the metrics, times and the score check)::

    python benchmarks/pbg_baseline.py --dataset wn18rr --dim 100 --epochs 2 \\
        --operator complex_diagonal --loss softmax --all-negs
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from bigembed.config import load_config
from bigembed.evaluation.ranking import rank_split
from bigembed.evaluation.scoring import direction
from bigembed.export.writers import partition_names
from bigembed.storage.data_manifest import DataManifest, read_data_manifest
from bigembed.trainer import Model
from bigembed.trainer.relations import RelationState

sys.path.insert(0, str(Path(__file__).resolve().parent))

from measure import BIGEMBED, run_measured

HERE = Path(__file__).resolve().parent
DATASETS = HERE.parent.parent / "shared" / "datasets"
DEFAULT_PBG_PYTHON = "/tmp/pbgvenv/bin/python"
ENTITY = "node"
SPLITS = ("train", "valid", "test")
METRICS = ("mrr", "hits@1", "hits@3", "hits@10", "mean_rank")
VENV_HELP = (
    "python3 -m venv /tmp/pbgvenv && /tmp/pbgvenv/bin/pip install torch==2.13.0 'setuptools<81' "
    "&& /tmp/pbgvenv/bin/pip install torchbiggraph==1.0.0"
)

# For each PBG operator: the names of its parameters in the checkpoint, in the
# order they are stacked into bigembed's parameter layout of that operator.
OPERATOR_PARAMS: dict[str, tuple[str, ...]] = {
    "none": (),
    "diagonal": ("diagonal",),
    "translation": ("translation",),
    "linear": ("linear_transformation",),
    "affine": ("linear_transformation", "translation"),
    "complex_diagonal": ("real", "imag"),
}
COMPARATORS = ("dot", "cos", "l2", "squared_l2")
LOSSES = ("ranking", "logistic", "softmax")


class PbgUnavailable(RuntimeError):
    """The given python cannot import torchbiggraph."""


@dataclass(frozen=True)
class PbgSettings:
    """The PBG settings a run exposes (PBG names in comments where they differ)."""

    dim: int = 100  # dimension
    epochs: int = 10  # num_epochs
    operator: str = "complex_diagonal"
    comparator: str = "dot"
    loss: str = "softmax"  # loss_fn
    margin: float = 0.1
    lr: float = 0.1
    relation_lr: float = 0.1
    batch_size: int = 1000
    uniform_negs: int = 50  # num_uniform_negs
    batch_negs: int = 50  # num_batch_negs
    all_negs: bool = False  # every relation's all_negs
    num_partitions: int = 1
    workers: int = 2
    eval_fraction: float = 0.0  # PBG's default is 0.05 (edges withheld from training)
    global_emb: bool = True  # PBG's default: a learnt vector added to every row before the operator

    def check(self) -> None:
        if self.operator not in OPERATOR_PARAMS:
            raise ValueError(f"operator must be one of {', '.join(OPERATOR_PARAMS)}, got {self.operator!r}")
        if self.comparator not in COMPARATORS:
            raise ValueError(f"comparator must be one of {', '.join(COMPARATORS)}, got {self.comparator!r}")
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {', '.join(LOSSES)}, got {self.loss!r}")
        if self.batch_negs and self.batch_size % self.batch_negs:
            raise ValueError(f"PBG needs batch_size ({self.batch_size}) to be a multiple of "
                             f"batch_negs ({self.batch_negs})")
        if self.operator == "complex_diagonal" and self.dim % 2:
            raise ValueError("complex_diagonal needs an even dim (real and imaginary halves)")


@dataclass(frozen=True)
class PbgPaths:
    """Where one run keeps its files (the whole folder is the run's; it is rebuilt each time)."""

    work: Path

    @property
    def config(self) -> Path:
        return self.work / "pbg_config.py"

    @property
    def driver(self) -> Path:
        return self.work / "pbg_driver.py"

    @property
    def entities(self) -> Path:
        return self.work / "pbg-data"

    def edges(self, split: str) -> Path:
        return self.work / "pbg-data" / f"edges-{split}"

    @property
    def checkpoints(self) -> Path:
        return self.work / "pbg-checkpoints"

    @property
    def timings(self) -> Path:
        return self.work / "pbg_timings.json"

    @property
    def train_log(self) -> Path:
        return self.work / "pbg_train.log"


# The script run by PBG's python. Commands:
#   import CONFIG IN OUT [IN OUT ...]   PBG's TSV importer: entities from every IN, edges of each IN into OUT
#   train CONFIG TIMINGS LOG             train (output into LOG), epoch start times into TIMINGS
#   score CONFIG TRIPLES OUT             PBG's own model scores of [head, relation index, tail] name triples
DRIVER = r'''
import json
import logging
import os
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Optional

import torchbiggraph.schema
from torchbiggraph.config import ConfigFileLoader, add_to_sys_path


def unpack_optional(type_):
    # PBG 1.0.0 recognises an Optional[X] field by identity with a newly built
    # Optional[X]; once typing's cache has dropped the original (importing torch
    # fills it), config fields like relation_lr fail with "Unknown type". Compare
    # by equality instead.
    args = getattr(type_, "__args__", ())
    if len(args) == 2 and args[1] is type(None) and type_ == Optional[args[0]]:
        return args[0]
    raise TypeError("Not an optional type")


torchbiggraph.schema.unpack_optional = unpack_optional

def do_import(config_path, pairs):
    from torchbiggraph.converters.import_from_tsv import convert_input_data, parse_config_partial

    raw = ConfigFileLoader().load_raw_config(config_path)
    entities, relations, entity_path, _, dynamic = parse_config_partial(raw)
    inputs, outputs = [Path(p) for p in pairs[0::2]], list(pairs[1::2])
    convert_input_data(entities, relations, entity_path, outputs, inputs,
                       lhs_col=0, rhs_col=2, rel_col=1, dynamic_relations=dynamic)


class EpochMarks(logging.Handler):
    """Notes the time of PBG's "Starting epoch" and "Exiting" log lines."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.starts, self.exit = [], None

    def emit(self, record):
        message = record.getMessage()
        if message.startswith("Starting epoch"):
            self.starts.append(time.perf_counter())
        elif message == "Exiting":
            self.exit = time.perf_counter()


def do_train(config_path, timings_path, log_path):
    log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    from torchbiggraph.train import train
    from torchbiggraph.util import SubprocessInitializer, set_logging_verbosity, setup_logging

    setup_logging()
    loader = ConfigFileLoader()
    config = loader.load_config(config_path)
    set_logging_verbosity(config.verbose)
    init = SubprocessInitializer()
    init.register(setup_logging, config.verbose)
    init.register(add_to_sys_path, loader.config_dir.name)
    marks = EpochMarks()
    logging.getLogger("torchbiggraph").addHandler(marks)
    start = time.perf_counter()
    train(config, subprocess_init=init)
    end = marks.exit or time.perf_counter()
    bounds = marks.starts + [end]
    Path(timings_path).write_text(json.dumps({
        "train_call_s": end - start,
        "setup_s": (marks.starts[0] - start) if marks.starts else None,
        "epoch_s": [b - a for a, b in zip(bounds, bounds[1:])],
    }))


def do_score(config_path, triples_path, out_path):
    import torch
    from torchbiggraph.checkpoint_manager import CheckpointManager
    from torchbiggraph.edgelist import EdgeList
    from torchbiggraph.entitylist import EntityList
    from torchbiggraph.model import make_model
    from torchbiggraph.types import Side

    config = ConfigFileLoader().load_config(config_path)
    (entity, schema), = config.entities.items()
    where = {}
    for part in range(schema.num_partitions):
        names = json.loads((Path(config.entity_path) / f"entity_names_{entity}_{part}.json").read_text())
        where.update((name, (part, offset)) for offset, name in enumerate(names))
    model = make_model(config)
    manager = CheckpointManager(config.checkpoint_path)
    state, _ = manager.read_model()
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not missing and not unexpected, (missing, unexpected)
    embeddings = [manager.read(entity, part)[0] for part in range(schema.num_partitions)]
    # Only the positive scores are used; the negatives the forward pass also draws do not
    # change them. A chunk of at least one keeps the chunking valid for any settings.
    model.num_batch_negs = max(1, model.num_batch_negs)
    groups = defaultdict(list)
    triples = json.loads(Path(triples_path).read_text())
    for i, (head, rel, tail) in enumerate(triples):
        (hp, ho), (tp, to) = where[head], where[tail]
        groups[rel, hp, tp].append((i, ho, to))
    scores = [None] * len(triples)
    with torch.no_grad():
        for (rel, hp, tp), items in groups.items():
            model.set_embeddings(entity, torch.nn.Parameter(embeddings[hp]), Side.LHS)
            model.set_embeddings(entity, torch.nn.Parameter(embeddings[tp]), Side.RHS)
            edges = EdgeList(EntityList.from_tensor(torch.tensor([h for _, h, _ in items])),
                             EntityList.from_tensor(torch.tensor([t for _, _, t in items])),
                             torch.tensor(rel))
            for (i, _, _), s in zip(items, model(edges).lhs_pos.tolist()):
                scores[i] = s
    Path(out_path).write_text(json.dumps(scores))


if __name__ == "__main__":
    command, args = sys.argv[1], sys.argv[2:]
    if command == "import":
        do_import(args[0], args[1:])
    elif command == "train":
        do_train(*args)
    elif command == "score":
        do_score(*args)
    else:
        raise SystemExit(f"unknown command {command!r}")
'''


def pbg_version(pbg_python: str) -> str:
    """torchbiggraph's version in ``pbg_python``; :class:`PbgUnavailable` (saying how to fix it) if none."""
    probe = "import importlib.metadata as m, torchbiggraph; print(m.version('torchbiggraph'))"
    try:
        out = subprocess.run([pbg_python, "-W", "ignore", "-c", probe], capture_output=True, text=True)
    except OSError as exc:
        raise PbgUnavailable(f"{pbg_python}: cannot run it ({exc}). Create PBG's venv with:\n  {VENV_HELP}") from None
    if out.returncode != 0:
        last = (out.stderr.strip().splitlines() or ["no output"])[-1]
        raise PbgUnavailable(f"{pbg_python} cannot import torchbiggraph ({last}). "
                             f"Create PBG's venv with:\n  {VENV_HELP}")
    return out.stdout.strip()


def run_pbg_script(pbg_python: str, paths: PbgPaths, *args: str) -> None:
    """One driver command whose output is only shown if it fails."""
    out = subprocess.run([pbg_python, "-W", "ignore", str(paths.driver), *args], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"PBG driver {args[0]} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")


def import_bigembed_data(dataset_dir: Path, out: Path) -> DataManifest:
    """The dataset as a one-partition bigembed DATA folder (reused when it is already there)."""
    if not (out / "manifest.json").exists():
        run_measured([*BIGEMBED, "import", str(dataset_dir / "train.txt"),
                      "--split", f"valid={dataset_dir / 'valid.txt'}", "--split", f"test={dataset_dir / 'test.txt'}",
                      "-o", str(out), "-p", "1", "--overwrite", "--no-progress"])
    data = read_data_manifest(out)
    if data.num_partitions != 1:
        raise ValueError(f"{out}: expected a one-partition DATA, it has {data.num_partitions}")
    return data


def check_three_columns(dataset_dir: Path) -> None:
    """PBG's importer splits lines on any whitespace: names with spaces would shift the columns."""
    for split in SPLITS:
        with open(dataset_dir / f"{split}.txt") as f:
            for n, line in enumerate(f, 1):
                if len(line.split()) != 3:
                    raise ValueError(f"{dataset_dir / split}.txt:{n}: not three whitespace-free fields")


def pbg_config(settings: PbgSettings, relations: list[str], paths: PbgPaths) -> dict[str, Any]:
    """PBG's config dict: the exposed settings, static relations in bigembed's order, PBG's other defaults."""
    s = settings
    return {
        "entity_path": str(paths.entities),
        "edge_paths": [str(paths.edges("train"))],
        "checkpoint_path": str(paths.checkpoints),
        "entities": {ENTITY: {"num_partitions": s.num_partitions}},
        "relations": [{"name": name, "lhs": ENTITY, "rhs": ENTITY, "operator": s.operator, "all_negs": s.all_negs}
                      for name in relations],
        "dynamic_relations": False,
        "dimension": s.dim,
        "comparator": s.comparator,
        "loss_fn": s.loss,
        "margin": s.margin,
        "num_epochs": s.epochs,
        "lr": s.lr,
        "relation_lr": s.relation_lr,
        "batch_size": s.batch_size,
        "num_uniform_negs": s.uniform_negs,
        "num_batch_negs": s.batch_negs,
        "workers": s.workers,
        "eval_fraction": s.eval_fraction,
        "global_emb": s.global_emb,
    }


IMPORTED = ".imported"  # in PBG's data folder once its import has finished


def write_run_files(paths: PbgPaths, config: dict[str, Any], keep_data: bool = False) -> bool:
    """A fresh work folder with the config module (PBG's CLI format) and the driver. With
    ``keep_data``, PBG's converted data is kept when the config is the same as the last run's
    (its importer takes minutes); returns whether it was kept."""
    text = f"def get_torchbiggraph_config():\n    return {config!r}\n"
    kept = (keep_data and (paths.entities / IMPORTED).is_file() and paths.config.is_file()
            and paths.config.read_text() == text)
    if paths.work.exists():
        for item in paths.work.iterdir():
            if not (kept and item == paths.entities):
                shutil.rmtree(item) if item.is_dir() else item.unlink()
    paths.work.mkdir(parents=True, exist_ok=True)
    paths.config.write_text(text)
    paths.driver.write_text(DRIVER)
    return kept


def train_measured(pbg_python: str, paths: PbgPaths) -> tuple[float, float, dict[str, Any]]:
    """Train; returns (wall seconds of the whole child, its peak RSS in MiB, the driver's timings)."""
    cmd = [pbg_python, "-W", "ignore", str(paths.driver), "train", str(paths.config), str(paths.timings),
           str(paths.train_log)]
    try:
        wall, rss = run_measured(cmd)
    except SystemExit:
        tail = paths.train_log.read_text()[-4000:] if paths.train_log.exists() else "(no log)"
        raise RuntimeError(f"PBG training failed; end of {paths.train_log}:\n{tail}") from None
    return wall, rss, json.loads(paths.timings.read_text())


def epoch_losses(paths: PbgPaths) -> list[float]:
    """Mean training loss per edge of each epoch, from PBG's training_stats.json."""
    totals: dict[int, list[float]] = defaultdict(lambda: [0.0, 0.0])
    stats_file = paths.checkpoints / "training_stats.json"
    if not stats_file.exists():
        return []
    for line in stats_file.read_text().splitlines():
        row = json.loads(line)
        count = row["stats"]["count"]
        totals[row["epoch_idx"]][0] += row["stats"]["metrics"]["loss"] * count
        totals[row["epoch_idx"]][1] += count
    return [loss / max(1.0, count) for _, (loss, count) in sorted(totals.items())]


def checkpoint_version(paths: PbgPaths) -> int:
    return int((paths.checkpoints / "checkpoint_version.txt").read_text().strip())


def read_pbg_embeddings(paths: PbgPaths, num_partitions: int, version: int) -> tuple[list[str], np.ndarray]:
    """PBG's node names and rows (global embedding added), partitions concatenated in PBG's order."""
    names: list[str] = []
    rows = []
    for p in range(num_partitions):
        names += json.loads((paths.entities / f"entity_names_{ENTITY}_{p}.json").read_text())
        with h5py.File(paths.checkpoints / f"embeddings_{ENTITY}_{p}.v{version}.h5", "r") as hf:
            rows.append(hf["embeddings"][...])
    emb = np.concatenate(rows).astype(np.float32, copy=False)
    with h5py.File(paths.checkpoints / f"model.v{version}.h5", "r") as hf:
        key = f"model/entities/{ENTITY}/global_embedding"
        if key in hf:
            emb = emb + hf[key][...].astype(np.float32)
    if emb.shape[0] != len(names):
        raise ValueError(f"PBG checkpoint has {emb.shape[0]} rows for {len(names)} names")
    return names, emb


def read_pbg_operators(paths: PbgPaths, version: int, operator: str, num_relations: int) -> list[torch.Tensor | None]:
    """Each relation's rhs operator parameters in bigembed's layout (None for ``none``)."""
    wanted = OPERATOR_PARAMS[operator]
    out: list[torch.Tensor | None] = []
    with h5py.File(paths.checkpoints / f"model.v{version}.h5", "r") as hf:
        group = hf["model"]
        lhs_keys = [k for k in group.get("relations", {}) if "lhs" in group[f"relations/{k}/operator"]]
        if lhs_keys:
            raise ValueError(f"PBG checkpoint has lhs operators (relations {lhs_keys[:5]}): not static relations?")
        for r in range(num_relations):
            if not wanted:
                out.append(None)
                continue
            base = f"relations/{r}/operator/rhs"
            parts = [torch.from_numpy(group[f"{base}/{name}"][...]).float() for name in wanted]
            if operator == "affine":  # A (dim, dim) stacked over b (dim,): (dim + 1, dim)
                out.append(torch.cat([parts[0], parts[1].unsqueeze(0)]))
            else:  # complex_diagonal: real half then imaginary half, unchanged
                out.append(torch.cat(parts))
    return out


def reorder_rows(pbg_names: list[str], pbg_emb: np.ndarray, data: DataManifest) -> np.ndarray:
    """PBG's rows in bigembed's node order (DATA with one partition)."""
    row_of = {name: i for i, name in enumerate(pbg_names)}
    ours = [name for chunk in partition_names(data, 0) for name in chunk]
    missing = [n for n in ours if n not in row_of]
    if missing:
        raise ValueError(f"{len(missing)} bigembed nodes are unknown to PBG, e.g. {missing[:3]}")
    return np.ascontiguousarray(pbg_emb[np.fromiter((row_of[n] for n in ours), np.int64, len(ours))])


def bigembed_model(settings: PbgSettings, data: DataManifest,
                   params: list[torch.Tensor | None]) -> tuple[Model, RelationState]:
    """bigembed's model with PBG's operator and comparator, holding PBG's relation parameters."""
    config = load_config(overrides={"model.dim": settings.dim, "model.operator": settings.operator,
                                    "model.comparator": settings.comparator, "model.loss": settings.loss,
                                    "model.margin": settings.margin, "model.reciprocal": False})
    model = Model.for_data(config, data)
    total = sum(0 if s.shape is None else int(np.prod(s.shape)) for s in model.specs)
    flat = torch.zeros(total)
    for spec, p in zip(model.specs, params, strict=True):
        if spec.shape is None:
            continue
        assert p is not None and tuple(p.shape) == spec.shape, (spec.name, None if p is None else p.shape)
        flat[spec.offset : spec.offset + p.numel()] = p.reshape(-1)
    return model, RelationState(model.specs, flat, torch.zeros(0))


def sample_triples(dataset_dir: Path, relations: list[str], count: int, seed: int = 0) -> list[list[Any]]:
    """``count`` (head, relation index, tail) name triples: half test edges, half random corruptions."""
    rng = random.Random(seed)
    rel_index = {name: i for i, name in enumerate(relations)}
    edges = [line.split() for line in (dataset_dir / "test.txt").read_text().splitlines() if line.strip()]
    nodes = sorted({n for h, _, t in edges for n in (h, t)})
    picked = rng.sample(edges, min(count // 2, len(edges)))
    triples = [[h, rel_index[r], t] for h, r, t in picked]
    while len(triples) < count:
        triples.append([rng.choice(nodes), rng.randrange(len(relations)), rng.choice(nodes)])
    return triples


def score_check(pbg_python: str, paths: PbgPaths, dataset_dir: Path, data: DataManifest, emb: np.ndarray,
                model: Model, relations: RelationState, count: int = 40) -> dict[str, Any]:
    """Score the same triples with PBG's own model and with the bigembed model on reversed edges.

    bigembed's score of PBG's edge (h, r, t) is that of (t, r, h) under ``model``,
    computed by the same ``direction`` code the ranking uses.
    """
    triples = sample_triples(dataset_dir, data.relations, count)
    triples_file, scores_file = paths.work / "check_triples.json", paths.work / "check_scores.json"
    triples_file.write_text(json.dumps(triples))
    run_pbg_script(pbg_python, paths, "score", str(paths.config), str(triples_file), str(scores_file))
    theirs = torch.tensor(json.loads(scores_file.read_text()), dtype=torch.float64)
    row = {name: i for i, name in enumerate(n for chunk in partition_names(data, 0) for n in chunk)}
    E = torch.from_numpy(emb)
    ours = torch.empty(len(triples), dtype=torch.float64)
    with torch.no_grad():
        for i, (head, rel, tail) in enumerate(triples):
            d = direction(model, relations, rel, E[[row[tail]]], E[[row[head]]], predict_lhs=False, reciprocal=False)
            ours[i] = float(d.true_scores[0])
    diff = (ours - theirs).abs()
    return {"triples": len(triples), "max_abs_diff": float(diff.max()),
            "max_rel_diff": float((diff / theirs.abs().clamp_min(1e-6)).max())}


def evaluate(data: DataManifest, emb: np.ndarray, model: Model, relations: RelationState, dim: int,
             split: str) -> dict[str, Any]:
    """bigembed's filtered full ranking of ``split`` (reversed edges, see the module docstring).

    ``rhs``/``lhs`` are swapped back so that they name the original edges' directions.
    """
    table = torch.from_numpy(emb)
    out = rank_split(data, split, lambda p: table, model, relations, reciprocal=False, dim=dim, reverse=True)
    out["rhs"], out["lhs"] = out["lhs"], out["rhs"]
    return out


def run_pbg(dataset: str, workdir: Path, pbg_python: str = DEFAULT_PBG_PYTHON, *,
            datasets: Path = DATASETS, data_dir: Path | None = None, dim: int = 100, epochs: int = 10,
            operator: str = "complex_diagonal", comparator: str = "dot", loss: str = "softmax",
            margin: float = 0.1, lr: float = 0.1, relation_lr: float = 0.1, batch_size: int = 1000,
            uniform_negs: int = 50, batch_negs: int = 50, all_negs: bool = False, num_partitions: int = 1,
            workers: int = 2, eval_fraction: float = 0.0, global_emb: bool = True, check_triples: int = 40,
            keep_data: bool = False) -> dict[str, Any]:
    """Train PBG 1.0.0 on ``datasets/dataset`` and rank valid and test with bigembed's evaluator.

    ``workdir`` is replaced by this run's files (PBG config, driver, PBG data,
    checkpoints, log); the bigembed DATA goes to ``data_dir`` (default
    ``workdir``'s sibling ``<dataset>-bigembed-p1``, reused when present).
    Returns settings, times (``train_wall_s`` of the whole training process,
    ``epoch_wall_s`` per epoch), ``peak_rss_mib``, the score check and the
    ``valid``/``test`` metrics dicts of ``rank_split``. ``keep_data``: reuse PBG's converted
    data from the last run in ``workdir`` when its config is the same (repeated rounds).
    """
    settings = PbgSettings(dim, epochs, operator, comparator, loss, margin, lr, relation_lr, batch_size,
                           uniform_negs, batch_negs, all_negs, num_partitions, workers, eval_fraction, global_emb)
    settings.check()
    version = pbg_version(pbg_python)
    dataset_dir = Path(datasets) / dataset
    check_three_columns(dataset_dir)
    workdir = Path(workdir)
    data = import_bigembed_data(dataset_dir, Path(data_dir or workdir.parent / f"{dataset}-bigembed-p1"))
    paths = PbgPaths(workdir)
    kept = write_run_files(paths, pbg_config(settings, data.relations, paths), keep_data)
    pairs = [str(p) for split in SPLITS for p in (dataset_dir / f"{split}.txt", paths.edges(split))]
    if not kept:
        run_pbg_script(pbg_python, paths, "import", str(paths.config), *pairs)
        (paths.entities / IMPORTED).write_text("")  # whole: an interrupted import leaves no marker

    wall, rss, timings = train_measured(pbg_python, paths)
    ckpt = checkpoint_version(paths)
    names, pbg_emb = read_pbg_embeddings(paths, num_partitions, ckpt)
    emb = reorder_rows(names, pbg_emb, data)
    model, relations = bigembed_model(settings, data, read_pbg_operators(paths, ckpt, operator, len(data.relations)))
    check = score_check(pbg_python, paths, dataset_dir, data, emb, model, relations, check_triples)
    epoch_s = timings["epoch_s"]
    return {
        "system": f"PyTorch-BigGraph {version}",
        "dataset": dataset,
        "settings": asdict(settings),
        "train_wall_s": round(wall, 2),
        "train_call_s": round(timings["train_call_s"], 2),
        "setup_s": None if timings["setup_s"] is None else round(timings["setup_s"], 2),
        "epoch_wall_s": [round(t, 2) for t in epoch_s],
        "later_epochs_mean_s": round(sum(epoch_s[1:]) / len(epoch_s[1:]), 2) if len(epoch_s) > 1 else None,
        "epoch_loss": [round(x, 4) for x in epoch_losses(paths)],
        "peak_rss_mib": round(rss),
        "score_check": check,
        "score_check_max_abs_diff": check["max_abs_diff"],
        "valid": evaluate(data, emb, model, relations, dim, "valid"),
        "test": evaluate(data, emb, model, relations, dim, "test"),
        "workdir": str(workdir),
    }


def _summary(result: dict[str, Any]) -> str:
    lines = [f"{result['system']} on {result['dataset']}: {json.dumps(result['settings'])}",
             f"train wall {result['train_wall_s']} s (in train() {result['train_call_s']} s, "
             f"setup {result['setup_s']} s), "
             f"epochs {result['epoch_wall_s']} s, later epochs mean {result['later_epochs_mean_s']} s, "
             f"peak RSS {result['peak_rss_mib']} MiB",
             f"epoch loss {result['epoch_loss']}",
             f"score check: max |diff| = {result['score_check']['max_abs_diff']:.2g} "
             f"(max rel {result['score_check']['max_rel_diff']:.2g}) over {result['score_check']['triples']} triples"]
    for split in ("valid", "test"):
        m = result[split]
        lines.append(f"{split} ({m['protocol']}): " + ", ".join(f"{k} {m[k]:.4f}" for k in METRICS))
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="wn18rr")
    ap.add_argument("--datasets", type=Path, default=DATASETS, help="folder holding the dataset folders")
    ap.add_argument("--work", type=Path, default=None, help="work folder (default benchmarks/work/pbg-DATASET)")
    ap.add_argument("--pbg-python", default=DEFAULT_PBG_PYTHON)
    ap.add_argument("--dim", type=int, default=100)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--operator", default="complex_diagonal", choices=list(OPERATOR_PARAMS))
    ap.add_argument("--comparator", default="dot", choices=COMPARATORS)
    ap.add_argument("--loss", default="softmax", choices=LOSSES)
    ap.add_argument("--margin", type=float, default=0.1)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--relation-lr", type=float, default=0.1)
    ap.add_argument("--batch-size", type=int, default=1000)
    ap.add_argument("--uniform-negs", type=int, default=50)
    ap.add_argument("--batch-negs", type=int, default=50)
    ap.add_argument("--all-negs", action="store_true")
    ap.add_argument("--partitions", type=int, default=1)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--eval-fraction", type=float, default=0.0, help="PBG's held-out fraction (its default: 0.05)")
    ap.add_argument("--no-global-emb", action="store_true", help="turn off PBG's global embedding (on by default)")
    ap.add_argument("--json", type=Path, default=None, help="also write the full result here")
    args = ap.parse_args()
    work = args.work or HERE / "work" / f"pbg-{args.dataset}"
    try:
        result = run_pbg(args.dataset, work, args.pbg_python, datasets=args.datasets, dim=args.dim,
                         epochs=args.epochs, operator=args.operator, comparator=args.comparator, loss=args.loss,
                         margin=args.margin, lr=args.lr, relation_lr=args.relation_lr, batch_size=args.batch_size,
                         uniform_negs=args.uniform_negs, batch_negs=args.batch_negs, all_negs=args.all_negs,
                         num_partitions=args.partitions, workers=args.workers, eval_fraction=args.eval_fraction,
                         global_emb=not args.no_global_emb)
    except PbgUnavailable as exc:
        raise SystemExit(str(exc)) from None
    print(_summary(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
