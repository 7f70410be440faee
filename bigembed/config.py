"""The typed training configuration: one frozen dataclass tree, validated at load.

Sources are layered: the schema defaults, then a TOML/JSON file, then
``--set section.key=value`` overrides (and the CLI's shortcut flags, which are
just named overrides). Every error names the dotted key, what was expected and
what was given::

    >>> load_config(overrides={"training.lr": "-0.1"})
    Traceback (most recent call last):
    bigembed.errors.ConfigError: training.lr: must be > 0, got -0.1
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import tomllib
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bigembed.errors import ConfigError

OPERATORS = ("none", "translation", "diagonal", "linear", "affine", "complex_diagonal", "rotation")
COMPLEX_OPERATORS = ("complex_diagonal", "rotation")  # need an even dimension
COMPARATORS = ("dot", "cos", "l2", "squared_l2")
LOSSES = ("ranking", "logistic", "softmax")
REGULARIZERS = ("none", "n3", "l2")
NEGATIVE_SIDES = ("both", "lhs", "rhs")
BUCKET_ORDERS = ("inside_out", "outside_in", "beta", "random", "sequential")
KERNELS = ("auto", "native", "torchscript")
RANKING_GRADIENTS = ("auto", "sparse", "dense")
STORAGE_DTYPES = ("float32", "float16", "bfloat16")  # training.storage_dtype (bigembed.storage.dtypes)


def _opt(default: Any, help: str, **checks: Any) -> Any:
    return field(default=default, metadata={"help": help, **checks})


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    dim: int = _opt(256, "Embedding dimension (with complex_diagonal: dim / 2 complex numbers).", min=1)
    operator: str = _opt(
        "complex_diagonal",
        "Relation operator applied to the lhs embedding (default of every relation; "
        "[relations.NAME] overrides it).",
        choices=OPERATORS,
    )
    comparator: str = _opt(
        "dot",
        "How an (operated) lhs and a rhs are scored (with cos, raise init_scale to about 0.1: "
        "cosine ignores length, so tiny initial rows turn each step into a jump).",
        choices=COMPARATORS,
    )
    loss: str = _opt(
        "softmax",
        "Training loss: softmax (cross-entropy of the positive against its negatives), ranking "
        "(margin hinge, PyTorch-BigGraph's default) or logistic.",
        choices=LOSSES,
    )
    margin: float = _opt(0.1, "Margin of the ranking loss.", min=0.0)
    init_scale: float = _opt(
        0.001, "Standard deviation of the initial embeddings.", min_exclusive=0.0
    )
    relation_init: str = _opt(
        "random",
        "Initial relation parameters: identity (each operator starts as a no-op, as PyTorch-BigGraph) "
        "or random (normal with std init_scale, as Lacroix et al.'s ComplEx-N3; far better on WN18RR).",
        choices=("identity", "random"),
    )
    reciprocal: bool = _opt(
        True,
        "Learn an inverse of every relation and train each edge in both directions, "
        "corrupting only the rhs (predicting the lhs uses the inverse relation).",
    )
    regularizer: str = _opt(
        "n3",
        "Penalty on the embeddings and relation parameters of each positive edge: "
        "n3 (cubed absolute values; moduli for complex operators) or l2 (squares).",
        choices=REGULARIZERS,
    )
    regularization: float = _opt(
        0.03,
        "Weight of the regularizer (the default's search, filtered test MRR at 0.03 / 0.01: "
        "WN18RR 0.430 / 0.418, CoDEx-M 0.309 / 0.296, CoDEx-S 0.410 / 0.435; WN18RR, the "
        "sparsest, does best at 0.1).",
        min=0.0,
    )
    max_norm: float = _opt(
        0.0,
        "Rescale any updated embedding whose L2 norm exceeds this (0: no limit). With several "
        "workers, two updating one row at the same moment can leave it slightly longer (Hogwild "
        "writes are not atomic); one worker keeps the bound exactly.",
        min=0.0,
    )
    softmax_correction: bool = _opt(
        True,
        "With the softmax loss, weight each uniformly sampled negative as N / U of the N candidate "
        "rows it was drawn from (U = training.negatives), so that the sampled loss estimates the "
        "softmax over all of them (log(N / U) added to each sampled score; in-batch negatives, "
        "drawn by degree, are left as they are). On WN18RR: filtered MRR 0.42 after 3 epochs "
        "instead of 0.30, at no cost. false: the plain softmax over the sample, as PyTorch-BigGraph.",
    )
    global_emb: bool = _opt(
        False,
        "Learn one vector per entity type that is added to every embedding of that type before "
        "the operator and the comparator (PyTorch-BigGraph's global_emb, on by default there): with "
        "a dot product it gives every node a learnt, relation-dependent popularity term. Trained "
        "with relation_lr; evaluation and every export add it to the rows, so exported vectors "
        "score as the model does.",
    )


@dataclass(frozen=True, kw_only=True)
class TrainingConfig:
    epochs: int = _opt(20, "Passes over all training edges (0 only initialises).", min=0)
    lr: float = _opt(0.1, "Learning rate of the embeddings' Adagrad.", min_exclusive=0.0)
    relation_lr: float = _opt(0.1, "Learning rate of the relation parameters.", min_exclusive=0.0)
    optimizer: str = _opt(
        "adagrad",
        "row_adagrad: one Adagrad accumulator per embedding (4 bytes a node, as PyTorch-BigGraph); "
        "adagrad: one per coordinate (4 x dim bytes a node: twice the memory of the embeddings, "
        "often better link prediction on knowledge graphs).",
        choices=("row_adagrad", "adagrad"),
    )
    storage_dtype: str = _opt(
        "float32",
        "How embeddings are stored on disk and in the partition buffer: float32, or float16 / "
        "bfloat16 for half the bytes a row (math stays float32; each update is rounded to the "
        "stored precision). float16 keeps 3 more bits of precision, bfloat16 float32's range.",
        choices=STORAGE_DTYPES,
    )
    batch_size: int = _opt(500, "Edges per batch.", min=1)
    chunk_size: int = _opt(
        500,
        "Edges per negative-sharing chunk: its edges share one draw of sampled negatives (so "
        "the rows gathered and updated per edge shrink as it grows); with batch_negatives, "
        "also the number of in-batch negatives.",
        min=1,
    )
    negatives: int = _opt(
        500, "Sampled negatives per chunk (see negative_partitions for where from).", min=0
    )
    batch_negatives: bool = _opt(
        False,
        "Use the other edges of a chunk as negatives too (in-batch negatives, drawn by degree; "
        "PyTorch-BigGraph's default). With the softmax loss they push popular nodes down too "
        "hard (CoDEx-M: valid MRR 0.283 against 0.308 without them, 6 epochs).",
    )
    degree_fraction: float = _opt(
        0.0,
        "Fraction of the sampled negatives drawn in proportion to node degree "
        "(endpoints of random training edges) instead of uniformly.",
        min=0.0,
        max=1.0,
    )
    all_negatives: bool = _opt(
        False,
        "Score every positive against every node of the partition instead of sampling "
        "(for small entity types; [relations.NAME] overrides it).",
    )
    negative_partitions: str = _opt(
        "auto",
        "Where a side's negatives come from: answer (only the true answer's partition, as "
        "PyTorch-BigGraph does), all (every partition, uniformly; needs buffer_partitions >= P, "
        "so all stay in memory) or auto (all when buffer_partitions >= P, else answer).",
        choices=("auto", "all", "answer"),
    )
    negative_sides: str = _opt(
        "both",
        "Which side of an edge is corrupted ([relations.NAME] overrides it; "
        "model.reciprocal implies rhs).",
        choices=NEGATIVE_SIDES,
    )
    fused_step: bool = _opt(
        True,
        "Score sampled negatives with hand-written gradients (dot and cos comparators) instead "
        "of autograd: the same step, 1.5-1.7x the edges/s end to end (benchmarks/throughput.py); "
        "false runs the autograd reference.",
    )
    kernels: str = _opt(
        "auto",
        "The training step's CPU kernels: native (C, compiled on first use with the system's "
        "compiler and cached; an error where that fails), torchscript (no compiler needed; the "
        "same results up to rounding, about 1.7x slower with the ranking loss) or auto "
        "(native where it builds, else torchscript, saying why). Resolved once at the start and "
        "recorded in stats.jsonl and `bigembed info RUN`.",
        choices=KERNELS,
    )
    ranking_gradients: str = _opt(
        "auto",
        "With the ranking loss and native kernels, how the gradients are computed: sparse (only "
        "the active hinges, fast once most hinges are inactive), dense (the full products: the "
        "work per edge never changes, for timing comparisons) or auto (sparse, switching to dense "
        "for 32 batches whenever over 20% of a batch's hinges are active).",
        choices=RANKING_GRADIENTS,
    )
    workers: int = _opt(
        0, "Hogwild worker threads (0: one per CPU core, at most 8).", min=0
    )
    device: str = _opt(
        "cpu",
        "Where training runs: cpu, or cuda / cuda:N (the buffer's partitions live on that GPU, "
        "edges are copied to it a slab at a time, one worker; --memory then budgets the GPU's "
        "memory). Evaluation and export run on the CPU.",
        pattern=r"cpu|cuda(:[0-9]+)?", expected="cpu, cuda or cuda:N",
    )
    seed: int = _opt(0, "Seed of every random choice (init, orders, negatives).", min=0)
    deterministic: bool = _opt(
        False, "Single worker and seeded per bucket: a resumed run equals an uninterrupted one."
    )
    edge_chunks: int = _opt(
        1,
        "Passes over the bucket order per epoch, each training a different 1/N of every "
        "bucket's edges (as PyTorch-BigGraph's num_edge_chunks): with P > 1, training does not "
        "dwell on one bucket's edges for long (on CoDEx-S, P=4: 4 chunks narrowed the gap to "
        "P = 1 from about 0.05 to 0.03 MRR); costs N times the partition loads unless the buffer "
        "holds every partition.",
        min=1,
    )
    bucket_order: str = _opt(
        "inside_out",
        "Order in which the P x P buckets are visited (beta: Marius's order for a buffer of "
        "training.buffer_partitions, the fewest loads per epoch).",
        choices=BUCKET_ORDERS,
    )
    prefetch: bool = _opt(
        True,
        "With bucket_order = beta and buffer_partitions >= 3: plan the order for one partition "
        "less and load the next partition (writing back the one it replaces) on a background "
        "thread while the current bucket trains, so IO overlaps compute.",
    )
    buffer_partitions: int = _opt(
        2,
        "Partitions held in memory at once (c); peak memory is about c / P of the table. "
        "The partition evicted is the one needed furthest in the future.",
        min=2,
    )
    eval_every: int = _opt(
        0, "Rank the eval_split with the filtered protocol every N epochs (0: never).", min=0
    )
    eval_split: str = _opt("valid", "Split ranked during training.")
    early_stopping: int = _opt(
        0,
        "Stop when the filtered MRR on eval_split has not improved for this many "
        "evaluations in a row (0: never stop early).",
        min=0,
    )


@dataclass(frozen=True, kw_only=True)
class CheckpointConfig:
    interval_seconds: float = _opt(
        300.0,
        "Commit a version at the first bucket boundary after this many seconds "
        "(a version is always committed at the end of an epoch).",
        min=0.0,
    )
    keep_versions: int = _opt(2, "Committed versions kept on disk (>= 2 keeps a fallback).", min=1)
    max_commit_share: float = _opt(
        0.05,
        "Commit less often than interval_seconds when committing would otherwise take more than "
        "this share of the training time (a table too big to write often: 10 GB took about 40 s), "
        "so a crash loses at most about (1 - share) / share times the last commit's duration; "
        "0 (or interval_seconds = 0): commit exactly when interval_seconds says.",
        min=0.0, max=0.5,
    )


@dataclass(frozen=True, kw_only=True)
class DistributedConfig:
    """Training with several ranks started by torchrun (README, "Several machines")."""

    dead_after_seconds: float = _opt(
        10.0,
        "A rank that has not beaten its heartbeat for this long is taken for dead, and the others "
        "stop (nothing committed is lost; rerun to resume).",
        min=2.0,
    )
    connect_timeout_seconds: float = _opt(
        60.0, "How long a rank tries to reach the job's store and form the process group before it gives up.",
        min=1.0,
    )


@dataclass(frozen=True, kw_only=True)
class RelationConfig:
    """Per-relation settings, ``[relations.NAME]``; unset fields take the global default."""

    operator: str | None = _opt(None, "Operator of this relation (default model.operator).",
                                choices=OPERATORS)
    all_negatives: bool | None = _opt(None, "training.all_negatives for this relation.")
    negative_sides: str | None = _opt(None, "training.negative_sides for this relation.",
                                      choices=NEGATIVE_SIDES)
    weight: float = _opt(1.0, "Multiplies the loss of this relation's edges.", min=0.0)
    lhs: str | None = _opt(None, "Entity type of this relation's lhs nodes (read by `bigembed import "
                                 "--config`; with no types anywhere every node is of type \"node\").")
    rhs: str | None = _opt(None, "Entity type of this relation's rhs nodes (see lhs).")


@dataclass(frozen=True, kw_only=True)
class EntityConfig:
    """An entity type, ``[entities.NAME]`` (an empty table declares it)."""


DEFAULT_ENTITY = "node"


@dataclass(frozen=True, kw_only=True)
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
    relations: dict[str, RelationConfig] = field(default_factory=dict)
    entities: dict[str, EntityConfig] = field(default_factory=dict)

    def relation(self, name: str) -> RelationConfig:
        return self.relations.get(name) or RelationConfig()

    @property
    def typed(self) -> bool:
        """Whether the config declares a schema: entity types, or a relation's lhs/rhs type."""
        return bool(self.entities) or any(r.lhs or r.rhs for r in self.relations.values())

    def relation_types(self, name: str) -> tuple[str, str] | None:
        """``(lhs type, rhs type)`` of relation ``name`` in the schema; None if it has none.

        Without a schema every relation is ``("node", "node")``; with one declared
        entity type an unset side defaults to it.
        """
        if not self.typed:
            return DEFAULT_ENTITY, DEFAULT_ENTITY
        rc = self.relations.get(name)
        only = next(iter(self.entities)) if len(self.entities) == 1 else None
        lhs = (rc.lhs if rc else None) or only
        rhs = (rc.rhs if rc else None) or only
        return (lhs, rhs) if lhs and rhs else None


SECTIONS: dict[str, type] = {
    "model": ModelConfig,
    "training": TrainingConfig,
    "checkpoint": CheckpointConfig,
    "distributed": DistributedConfig,
}


def config_to_dict(config: Config) -> dict[str, dict[str, Any]]:
    """Plain nested dict of ``config`` (JSON-serialisable)."""
    return dataclasses.asdict(config)


# PyTorch-BigGraph's training step, and bigembed's defaults before a knowledge-graph recipe
# replaced them: both sides corrupted, in-batch plus 50 uniform negatives per chunk of 50, margin
# ranking, row Adagrad, relations started at the identity, no regulariser, no inverse relations.
PBG_STYLE: dict[str, Any] = {
    "model.operator": "none", "model.loss": "ranking", "model.relation_init": "identity",
    "model.reciprocal": False, "model.regularizer": "none", "model.regularization": 0.0,
    "training.optimizer": "row_adagrad", "training.relation_lr": 0.01, "training.batch_size": 1000,
    "training.chunk_size": 50, "training.negatives": 50, "training.batch_negatives": True,
}


# Settings added after RUNs were first written, each with the value a saved config that
# lacks it was trained with: a run saved before model.softmax_correction existed trained
# without the correction, and resuming it must neither change that nor call it a conflict.
LEGACY_VALUES: dict[str, Any] = {"model.softmax_correction": False, "model.global_emb": False}


def with_legacy_values(saved: dict[str, Any]) -> dict[str, Any]:
    """A run's saved (nested) config with every :data:`LEGACY_VALUES` key it lacks filled in."""
    out = {section: dict(values) if isinstance(values, dict) else values for section, values in saved.items()}
    for dotted, value in LEGACY_VALUES.items():
        section, key = dotted.split(".", 1)
        if isinstance(out.get(section), dict) and key not in out[section]:
            out[section][key] = value
    return out


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and not value:
            out[dotted] = {}  # an empty table still says something: ``[entities.user]``
        elif isinstance(value, Mapping):
            out.update(flatten(value, dotted + "."))
        else:
            out[dotted] = value
    return out


def read_config_file(path: Path) -> dict[str, Any]:
    """Read a TOML or JSON config file into flat ``{"a.b": value}`` form."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file ({exc.strerror})") from None
    try:
        data = json.loads(text) if str(path).endswith(".json") else tomllib.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: not valid {'JSON' if str(path).endswith('.json') else 'TOML'}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a table of sections, got {type(data).__name__}")
    return flatten(data)


def _coerce(key: str, value: Any, typ: Any) -> Any:
    """Turn ``value`` (maybe a string from ``--set``) into ``typ`` or raise naming ``key``."""
    args = typing.get_args(typ)
    if args and type(None) in args:  # ``X | None``: None stays None
        if value is None:
            return None
        (typ,) = [a for a in args if a is not type(None)]
    if typ is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("false", "0", "no", "off"):
            return False
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if typ is int:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if typ is float:
        number: float | None = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                pass
        if number is None:
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        if not math.isfinite(number):  # every range check is false for NaN: refuse it here
            raise ConfigError(f"{key}: must be a finite number, got {value!r}")
        return number
    if typ is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    raise ConfigError(f"{key}: unsupported type {typ}")  # pragma: no cover - schema bug


def _check(key: str, value: Any, meta: Mapping[str, Any]) -> None:
    if value is None:  # an optional key left unset
        return
    if "choices" in meta and value not in meta["choices"]:
        raise ConfigError(f"{key}: must be one of {', '.join(meta['choices'])}, got {value!r}")
    if "min" in meta and value < meta["min"]:
        raise ConfigError(f"{key}: must be >= {meta['min']}, got {value}")
    if "min_exclusive" in meta and value <= meta["min_exclusive"]:
        raise ConfigError(f"{key}: must be > {meta['min_exclusive']}, got {value}")
    if "max" in meta and value > meta["max"]:
        raise ConfigError(f"{key}: must be <= {meta['max']}, got {value}")
    if "pattern" in meta and not re.fullmatch(meta["pattern"], value):
        raise ConfigError(f"{key}: must be {meta['expected']}, got {value!r}")


def _set_field(cls: type, key: str, name: str, value: Any, into: dict[str, Any]) -> None:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    if name not in fields:
        raise ConfigError(f"{key}: unknown key (known: {', '.join(fields)})")
    coerced = _coerce(key, value, typing.get_type_hints(cls)[name])
    _check(key, coerced, fields[name].metadata)
    into[name] = coerced


def build_config(flat: Mapping[str, Any]) -> Config:
    """Build and validate a :class:`Config` from flat dotted keys; unknown keys are errors."""
    per_section: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
    per_relation: dict[str, dict[str, Any]] = {}
    entities: dict[str, EntityConfig] = {}
    for key, value in flat.items():
        section, _, name = key.partition(".")
        if value == {} and (section != "entities" or not name):
            continue  # an empty [model], [relations.NAME] or [entities] table sets nothing
        if section == "entities":
            if not name or "." in name or value != {}:
                raise ConfigError(f"{key}: expected an empty table [entities.NAME] declaring an entity type")
            entities[name] = EntityConfig()
            continue
        if section == "relations":
            relation, _, field_name = name.rpartition(".")
            if not relation:
                raise ConfigError(f"{key}: expected relations.NAME.KEY, e.g. relations.follows.operator")
            _set_field(RelationConfig, key, field_name, value, per_relation.setdefault(relation, {}))
            continue
        if section not in SECTIONS or not name:
            raise ConfigError(
                f"{key}: unknown key (sections are {', '.join(SECTIONS)}, relations.NAME, entities.NAME; "
                "see `bigembed config-help`)"
            )
        _set_field(SECTIONS[section], key, name, value, per_section[section])
    config = Config(
        **{name: SECTIONS[name](**values) for name, values in per_section.items()},
        relations={name: RelationConfig(**values) for name, values in sorted(per_relation.items())},
        entities=dict(sorted(entities.items())),
    )
    for f in dataclasses.fields(ModelConfig):  # defaults are checked too
        _check(f"model.{f.name}", getattr(config.model, f.name), f.metadata)
    _check_dimension(config)
    _check_schema(config)
    return config


TYPE_NAME = re.compile(r"[A-Za-z0-9_.-]+")


def _check_schema(config: Config) -> None:
    """Entity type names are plain words (they name files); with declared types, every
    relation's lhs/rhs must name one of them."""
    for name in config.entities:
        if not TYPE_NAME.fullmatch(name):
            raise ConfigError(f"entities.{name}: an entity type name may use letters, digits, _ . - only")
    for name, rc in config.relations.items():
        for side in ("lhs", "rhs"):
            typ = getattr(rc, side)
            if typ is not None and not TYPE_NAME.fullmatch(typ):
                raise ConfigError(f"relations.{name}.{side}: an entity type name may use letters, digits, "
                                  f"_ . - only, got {typ!r}")
            if typ is not None and config.entities and typ not in config.entities:
                raise ConfigError(
                    f"relations.{name}.{side}: unknown entity type {typ!r} "
                    f"(declared: {', '.join(config.entities)})"
                )


def _check_dimension(config: Config) -> None:
    """Complex operators split a row into real and imaginary halves: the dimension must be even."""
    used = {("model.operator", config.model.operator)}
    used |= {(f"relations.{n}.operator", r.operator) for n, r in config.relations.items() if r.operator}
    for key, op in sorted(used):
        if op in COMPLEX_OPERATORS and config.model.dim % 2:
            raise ConfigError(f"{key}: {op} needs an even model.dim, got {config.model.dim}")


def load_config(
    path: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    base: Mapping[str, Any] | None = None,
) -> Config:
    """Layer ``base`` (flat dict), a config file and ``overrides``, then validate."""
    flat: dict[str, Any] = dict(base or {})
    if path is not None:
        flat.update(read_config_file(path))
    flat.update(overrides or {})
    return build_config(flat)


def parse_set_option(item: str) -> tuple[str, str]:
    """``"training.lr=0.5"`` -> ``("training.lr", "0.5")``."""
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. training.lr=0.05")
    return key.strip(), value.strip()


def schema_help() -> str:
    """The config reference, generated from the schema (used by ``bigembed config-help``)."""
    lines: list[str] = []
    for section, cls in [*SECTIONS.items(), ("relations.NAME", RelationConfig)]:
        lines.append(f"[{section}]")
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            extra = ""
            if "choices" in f.metadata:
                extra = f" One of: {', '.join(f.metadata['choices'])}."
            default = f.default
            lines.append(
                f"  {f.name} ({_type_name(hints[f.name])}, default {json.dumps(default)}): "
                f"{f.metadata['help']}{extra}"
            )
        lines.append("")
    lines.append("[entities.NAME]")
    lines.append("  (an empty table) declares an entity type; relations name theirs with lhs and rhs, and")
    lines.append("  `bigembed import --config FILE` keeps each type's nodes apart (the same id in two types is")
    lines.append("  two nodes; negatives and rankings only use nodes of the right type).")
    lines.append("")
    return "\n".join(lines)


def _type_name(typ: Any) -> str:
    args = [a for a in typing.get_args(typ) if a is not type(None)]
    return args[0].__name__ if args else typ.__name__
