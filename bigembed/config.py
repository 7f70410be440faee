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
import tomllib
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bigembed.errors import ConfigError

OPERATORS = ("none", "translation", "diagonal")
COMPARATORS = ("dot",)
LOSSES = ("ranking",)
BUCKET_ORDERS = ("inside_out", "outside_in", "random", "sequential")


def _opt(default: Any, help: str, **checks: Any) -> Any:
    return field(default=default, metadata={"help": help, **checks})


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    dim: int = _opt(100, "Embedding dimension.", min=1)
    operator: str = _opt(
        "none", "Relation operator applied to the lhs embedding.", choices=OPERATORS
    )
    comparator: str = _opt("dot", "How an (operated) lhs and a rhs are scored.", choices=COMPARATORS)
    loss: str = _opt("ranking", "Training loss.", choices=LOSSES)
    margin: float = _opt(0.1, "Margin of the ranking loss.", min=0.0)
    init_scale: float = _opt(
        0.001, "Standard deviation of the initial embeddings.", min_exclusive=0.0
    )


@dataclass(frozen=True, kw_only=True)
class TrainingConfig:
    epochs: int = _opt(10, "Passes over all training edges (0 only initialises).", min=0)
    lr: float = _opt(0.1, "Learning rate of row-wise Adagrad.", min_exclusive=0.0)
    relation_lr: float = _opt(0.01, "Learning rate of the relation parameters.", min_exclusive=0.0)
    batch_size: int = _opt(1000, "Edges per batch.", min=1)
    chunk_size: int = _opt(
        50, "Edges per negative-sharing chunk; also the number of in-batch negatives.", min=1
    )
    negatives: int = _opt(
        50, "Uniform negatives per chunk, drawn from the bucket's partitions.", min=0
    )
    workers: int = _opt(
        0, "Hogwild worker threads (0: one per CPU core, at most 8).", min=0
    )
    seed: int = _opt(0, "Seed of every random choice (init, orders, negatives).", min=0)
    deterministic: bool = _opt(
        False, "Single worker and seeded per bucket: a resumed run equals an uninterrupted one."
    )
    bucket_order: str = _opt(
        "inside_out", "Order in which the P x P buckets are visited.", choices=BUCKET_ORDERS
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


@dataclass(frozen=True, kw_only=True)
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)


SECTIONS: dict[str, type] = {
    "model": ModelConfig,
    "training": TrainingConfig,
    "checkpoint": CheckpointConfig,
}


def config_to_dict(config: Config) -> dict[str, dict[str, Any]]:
    """Plain nested dict of ``config`` (JSON-serialisable)."""
    return dataclasses.asdict(config)


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping):
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


def _coerce(key: str, value: Any, typ: type) -> Any:
    """Turn ``value`` (maybe a string from ``--set``) into ``typ`` or raise naming ``key``."""
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
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if typ is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    raise ConfigError(f"{key}: unsupported type {typ}")  # pragma: no cover - schema bug


def _check(key: str, value: Any, meta: Mapping[str, Any]) -> None:
    if "choices" in meta and value not in meta["choices"]:
        raise ConfigError(f"{key}: must be one of {', '.join(meta['choices'])}, got {value!r}")
    if "min" in meta and value < meta["min"]:
        raise ConfigError(f"{key}: must be >= {meta['min']}, got {value}")
    if "min_exclusive" in meta and value <= meta["min_exclusive"]:
        raise ConfigError(f"{key}: must be > {meta['min_exclusive']}, got {value}")


def build_config(flat: Mapping[str, Any]) -> Config:
    """Build and validate a :class:`Config` from flat dotted keys; unknown keys are errors."""
    per_section: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
    for key, value in flat.items():
        section, _, name = key.partition(".")
        if section not in SECTIONS or not name:
            raise ConfigError(
                f"{key}: unknown key (sections are {', '.join(SECTIONS)}; see `bigembed config-help`)"
            )
        cls = SECTIONS[section]
        fields = {f.name: f for f in dataclasses.fields(cls)}
        if name not in fields:
            raise ConfigError(f"{key}: unknown key (known in {section}: {', '.join(fields)})")
        hints = typing.get_type_hints(cls)
        coerced = _coerce(key, value, hints[name])
        _check(key, coerced, fields[name].metadata)
        per_section[section][name] = coerced
    config = Config(**{name: SECTIONS[name](**values) for name, values in per_section.items()})
    for f in dataclasses.fields(ModelConfig):  # defaults are checked too
        _check(f"model.{f.name}", getattr(config.model, f.name), f.metadata)
    return config


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
    for section, cls in SECTIONS.items():
        lines.append(f"[{section}]")
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            extra = ""
            if "choices" in f.metadata:
                extra = f" One of: {', '.join(f.metadata['choices'])}."
            default = f.default
            lines.append(
                f"  {f.name} ({hints[f.name].__name__}, default {json.dumps(default)}): "
                f"{f.metadata['help']}{extra}"
            )
        lines.append("")
    return "\n".join(lines)
