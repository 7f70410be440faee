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


FACTORIES = {torch.empty, torch.zeros, torch.ones, torch.full, torch.arange, torch.randint, torch.randn, torch.rand,
             torch.tensor, torch.randperm, torch.eye, torch.linspace}


class _FactoryWatch(torch.overrides.TorchFunctionMode):
    """Records every tensor made from scratch without naming its device: on a GPU such a tensor
    would land on the CPU and meet the GPU's in the next operation."""

    def __init__(self):
        super().__init__()
        self.unnamed = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in FACTORIES and "device" not in kwargs:
            import traceback

            caller = next(f for f in reversed(traceback.extract_stack()[:-1]) if "torch" not in f.filename)
            self.unnamed.append(f"{func.__name__} at {caller.filename}:{caller.lineno}")
        return func(*args, **kwargs)


STEP_KINDS = [  # every kind of step: losses, comparators, operators, regulariser, autograd, ...
    {},  # dot + ranking: the wide layout (the C kernel on the CPU, TorchScript elsewhere)
    {"model.loss": "logistic"},
    {"model.loss": "softmax"},
    {"model.comparator": "cos"},
    {"model.operator": "translation"},
    {"model.operator": "complex_diagonal", "model.loss": "softmax"},
    {"model.regularizer": "n3", "model.regularization": 0.01},
    {"model.comparator": "l2"},  # autograd
    {"training.fused_step": False},
    {"training.all_negatives": True},
    {"training.all_negatives": True, "model.loss": "softmax"},
    {"model.max_norm": 1.0},
    {"training.optimizer": "adagrad"},
    {"training.degree_fraction": 0.5},
]


def step_kind_id(overrides: dict) -> str:
    return ",".join(f"{k}={v}" for k, v in overrides.items()) or "default"


def step_inputs(overrides: dict):
    """A small batch for a step of one of STEP_KINDS: (config, model, lhs, rhs, relations,
    lhs_idx, rhs_idx, pools)."""
    from tests.trainer.test_fused import _setup

    config, model, lhs, rhs, relations = _setup({"model.margin": 0.5, "training.chunk_size": 3,
                                                 "training.negatives": 4, **overrides})
    if config.training.optimizer == "adagrad":  # one accumulator per coordinate
        lhs.adagrad, rhs.adagrad = torch.zeros_like(lhs.emb), torch.zeros_like(rhs.emb)
    lhs_idx, rhs_idx = torch.tensor([0, 2, 4, 6, 1, 2]), torch.tensor([5, 4, 3, 2, 1, 5])
    pools = (lhs_idx, rhs_idx) if config.training.degree_fraction else None
    return config, model, lhs, rhs, relations, lhs_idx, rhs_idx, pools


@pytest.mark.parametrize("overrides", STEP_KINDS, ids=step_kind_id)
def test_the_step_makes_every_tensor_on_the_device_of_its_inputs(overrides, monkeypatch):
    """What a GPU run would trip over, checked on the CPU: with the C kernels off (as on a
    GPU), no tensor the step creates from scratch is left to the default device."""
    from bigembed.trainer.step import train_batch

    monkeypatch.setenv("BIGEMBED_NATIVE", "0")
    config, model, lhs, rhs, relations, lhs_idx, rhs_idx, pools = step_inputs(overrides)
    gen = torch.Generator().manual_seed(0)
    before = lhs.emb.clone()
    with _FactoryWatch() as watch:
        for _ in range(2):
            train_batch(model, lhs, rhs, relations, 0, lhs_idx, rhs_idx, None, config.training, gen, pools)
    assert watch.unnamed == []
    assert not torch.equal(before, lhs.emb)  # the watched steps did train
