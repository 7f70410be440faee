"""training.device = cuda: the same steps and the same training as on the CPU. Skipped without a
CUDA GPU (CI has none); run on a GPU machine with ``python -m pytest tests/trainer/test_cuda.py``."""

from __future__ import annotations

import pytest
import torch

from bigembed.checkpoint import read_current, read_manifest
from bigembed.config import load_config
from bigembed.evaluation import evaluate_sampled
from bigembed.generator import GraphSpec, write_graph
from bigembed.storage.data_manifest import read_data_manifest
from bigembed.trainer import BucketTrainer, PartitionState, RelationState
from bigembed.trainer import batch as batch_module
from bigembed.trainer.step import train_batch
from bigembed.training import train
from tests.conftest import import_files
from tests.trainer.test_device import STEP_KINDS, step_inputs, step_kind_id

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _fixed_negatives(num_rows, num_chunks, per_chunk, degree_fraction, pool, generator, low=0, k=None):
    """The same rows on either device (the CPU's and the GPU's generators draw differently)."""
    idx = (torch.arange(num_chunks * per_chunk) * 7 % num_rows + low).view(num_chunks, per_chunk)
    return idx.to(generator.device)


@pytest.mark.parametrize("overrides", STEP_KINDS, ids=step_kind_id)
def test_a_step_on_the_gpu_equals_the_step_on_the_cpu(overrides, monkeypatch):
    monkeypatch.setattr(batch_module, "sample_negatives", _fixed_negatives)
    config, model, lhs, rhs, relations, lhs_idx, rhs_idx, pools = step_inputs(overrides)
    ends = []
    for device in ("cpu", "cuda"):
        left = PartitionState(lhs.emb.clone().to(device), lhs.adagrad.clone().to(device))
        right = PartitionState(rhs.emb.clone().to(device), rhs.adagrad.clone().to(device))
        rels = RelationState(model.specs, relations.params.clone().to(device), relations.adagrad.clone().to(device))
        gen = torch.Generator(device=device).manual_seed(0)
        on = None if pools is None else tuple(t.to(device) for t in pools)
        losses = [train_batch(model, left, right, rels, 0, lhs_idx.to(device), rhs_idx.to(device), None,
                              config.training, gen, on) for _ in range(3)]
        assert left.emb.device.type == device
        ends.append((losses, [t.cpu() for t in (left.emb, right.emb, left.adagrad, right.adagrad, rels.params)]))
    (cpu_losses, cpu_tensors), (gpu_losses, gpu_tensors) = ends
    assert gpu_losses == pytest.approx(cpu_losses, rel=1e-4, abs=1e-5)
    assert cpu_losses[0] > 0 and not torch.equal(cpu_tensors[0], lhs.emb)  # the steps did something
    for c, g in zip(cpu_tensors, gpu_tensors, strict=True):
        assert torch.allclose(c, g, rtol=1e-4, atol=1e-5)


def test_a_gpu_trainer_has_one_worker():
    config = load_config(overrides={"training.device": "cuda", "training.workers": 4})
    from bigembed.trainer import Model

    trainer = BucketTrainer(Model.from_config(config, ["r"]), config.training)
    try:
        assert trainer.device.type == "cuda" and trainer.workers == 1
    finally:
        trainer.close()


@pytest.fixture(scope="module")
def data2(tmp_path_factory):
    root = tmp_path_factory.mktemp("cuda")
    graph = write_graph(GraphSpec(nodes=400, edges=8000, relations=2, communities=8, seed=3), root / "graph")
    return import_files(root / "data", graph, 2)


def _mrr(run, data, overrides):
    """Sampled test MRR, scored with the model the run was trained with (not the default one)."""
    manifest = read_manifest(run, read_current(run))
    return evaluate_sampled(run, manifest, read_data_manifest(data), load_config(overrides=overrides), "test",
                            100)["mrr"]


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_training_on_the_gpu_learns_as_on_the_cpu_and_resumes_on_either(tmp_path, data2, dtype):
    over = {"model.dim": 16, "training.epochs": 4, "training.storage_dtype": dtype}
    random_run = tmp_path / "random"
    train(data2, random_run, None, {**over, "training.epochs": 0}, log=lambda _m: None)
    cpu_runs = [tmp_path / f"cpu{seed}" for seed in range(3)]
    for seed, run in enumerate(cpu_runs):
        train(data2, run, None, {**over, "training.device": "cpu", "training.seed": seed}, log=lambda _m: None)
    gpu = tmp_path / "gpu"
    train(data2, gpu, None, {**over, "training.epochs": 2, "training.device": "cuda"}, log=lambda _m: None)
    train(data2, gpu, None, {**over, "training.epochs": 3, "training.device": "cpu"}, log=lambda _m: None)
    result = train(data2, gpu, None, {**over, "training.device": "cuda"}, log=lambda _m: None)
    assert result.epochs_done == 4
    base, gpu_mrr = _mrr(random_run, data2, over), _mrr(gpu, data2, over)
    cpu_mrrs = [_mrr(run, data2, over) for run in cpu_runs]
    assert gpu_mrr > 2 * base
    # The devices draw different negatives, so the runs differ as seeds do: on this graph the CPU's
    # sampled MRR spreads over about 0.1 across seeds (0.42 to 0.53 for seeds 0-4). The GPU's must
    # fall within the CPU seeds' range, give or take a little.
    assert min(cpu_mrrs) - 0.03 < gpu_mrr < max(cpu_mrrs) + 0.03, (gpu_mrr, cpu_mrrs)
