"""training.device: parsing and refusals that need no GPU; the GPU runs are in test_cuda.py."""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner

from bigembed.cli.main import cli
from bigembed.config import load_config
from bigembed.errors import ConfigError
from bigembed.trainer import BucketTrainer, Model
from bigembed.trainer.device import resolve_device
from tests.conftest import import_files

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")


@pytest.mark.parametrize("value", ["gpu", "cuda:", "cuda:x", "CPU", "cuda:0:1", "mps"])
def test_a_device_that_is_not_cpu_or_cuda_is_refused_by_name(value):
    with pytest.raises(ConfigError, match=rf"training.device: must be cpu, cuda or cuda:N, got '{value}'"):
        load_config(overrides={"training.device": value})


def test_cpu_is_the_default_and_keeps_one_worker_per_core():
    config = load_config(overrides={"training.workers": 2})
    assert config.training.device == "cpu" and resolve_device("cpu") == torch.device("cpu")
    trainer = BucketTrainer(Model.from_config(config, ["r"]), config.training)
    try:
        assert trainer.device == torch.device("cpu") and trainer.workers == 2
    finally:
        trainer.close()


@no_cuda
@pytest.mark.parametrize("value", ["cuda", "cuda:1"])
def test_cuda_without_a_gpu_is_refused_in_one_line(value):
    with pytest.raises(ConfigError, match=rf"training.device = {value}: no CUDA device is available") as info:
        resolve_device(value)
    assert "\n" not in str(info.value)


@no_cuda
def test_train_with_device_cuda_without_a_gpu_stops_before_writing_the_run(tmp_path, tiny_graph):
    data = import_files(tmp_path / "data", {"train": tiny_graph[0]}, 2)
    run = tmp_path / "run"
    result = CliRunner().invoke(cli, ["train", str(data), "-o", str(run), "--device", "cuda", "--no-progress"])
    assert result.exit_code == 1
    assert result.output.startswith("error: training.device = cuda: no CUDA device is available")
    assert len(result.output.strip().splitlines()) == 1
    assert not run.exists()


def test_deterministic_training_is_refused_on_a_gpu(monkeypatch):
    """``training.deterministic`` promises bit-identical resumes, which a GPU's unordered
    scatter-adds cannot give (the GPU itself is stood in for: the check comes after it is found)."""
    from bigembed.trainer import device as device_module

    monkeypatch.setattr(device_module, "resolve_device", lambda _name: torch.device("cuda", 0))
    config = load_config(overrides={"training.device": "cuda", "training.deterministic": True})
    with pytest.raises(ConfigError, match="training.deterministic: bit-identical runs need training.device = cpu"):
        device_module.training_device(config.training)
    config = load_config(overrides={"training.device": "cuda"})
    assert device_module.training_device(config.training) == torch.device("cuda", 0)
