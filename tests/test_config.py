from pathlib import Path

import pytest

from bigembed.config import load_config, parse_set_option, schema_help
from bigembed.errors import ConfigError


def test_defaults_are_valid():
    config = load_config()
    assert config.model.dim == 256 and config.model.operator == "complex_diagonal" and config.model.reciprocal
    assert config.training.bucket_order == "inside_out"


def test_overrides_are_coerced_from_strings():
    config = load_config(overrides={"training.lr": "0.5", "training.deterministic": "true", "model.dim": "16"})
    assert config.training.lr == 0.5
    assert config.training.deterministic is True
    assert config.model.dim == 16


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("training.lr", "-0.1", "training.lr: must be > 0.0, got -0.1"),
        ("model.dim", "abc", "model.dim: expected an integer, got 'abc'"),
        ("model.operator", "bogus", "model.operator: must be one of"),
        ("training.nope", "1", "training.nope: unknown key"),
        ("nosection.x", "1", "nosection.x: unknown key"),
        ("training.deterministic", "maybe", "training.deterministic: expected true or false"),
    ],
)
def test_bad_values_name_the_dotted_key(key, value, message):
    with pytest.raises(ConfigError) as info:
        load_config(overrides={key: value})
    assert message in str(info.value)


def test_toml_file_then_overrides(tmp_path: Path):
    path = tmp_path / "c.toml"
    path.write_text('[model]\ndim = 24\n[training]\nepochs = 3\nlr = 0.2\n')
    config = load_config(path, overrides={"training.lr": 0.3})
    assert (config.model.dim, config.training.epochs, config.training.lr) == (24, 3, 0.3)


def test_broken_toml_names_the_file(tmp_path: Path):
    path = tmp_path / "bad.toml"
    path.write_text("[model\ndim = 3")
    with pytest.raises(ConfigError, match="bad.toml: not valid TOML"):
        load_config(path)


def test_set_option_parsing():
    assert parse_set_option("training.lr=0.5") == ("training.lr", "0.5")
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        parse_set_option("training.lr")


def test_schema_help_lists_every_section_and_key():
    text = schema_help()
    for needle in ("[model]", "[training]", "[checkpoint]", "dim (int, default 256)", "interval_seconds"):
        assert needle in text


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", float("nan"), float("inf")])
@pytest.mark.parametrize("key", ["training.lr", "model.margin", "checkpoint.interval_seconds", "model.init_scale"])
def test_non_finite_floats_are_refused(key, value):
    # every range check is false for NaN, so NaN used to pass as a learning rate
    with pytest.raises(ConfigError, match=f"{key}: must be a finite number"):
        load_config(overrides={key: value})


def test_non_finite_floats_in_a_toml_file_are_refused(tmp_path: Path):
    path = tmp_path / "c.toml"
    path.write_text("[training]\nlr = nan\n")
    with pytest.raises(ConfigError, match="training.lr: must be a finite number"):
        load_config(path)
