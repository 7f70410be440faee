"""Where training runs (``training.device``): the CPU, or a CUDA GPU.

On a GPU the buffer's partitions (embeddings and Adagrad accumulators) and the relation
parameters live in its memory, each slab of a bucket's edges is copied over before its
batches train, and negatives are drawn by a generator on the GPU. One worker drives the GPU,
whose kernels run in parallel already. The C kernels are CPU-only: the GPU runs the
TorchScript ones.
"""

from __future__ import annotations

import torch

from bigembed.config import TrainingConfig
from bigembed.errors import ConfigError


def resolve_device(name: str) -> torch.device:
    """The torch device of ``training.device`` (cpu, cuda or cuda:N, as the config checks its
    spelling); a one-line ConfigError when this machine cannot train there."""
    device = torch.device(name)
    if device.type == "cpu":
        return device
    if not torch.cuda.is_available():
        build = "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
        raise ConfigError(f"training.device = {name}: no CUDA device is available (torch {torch.__version__}, "
                          f"{build}); train on the CPU with training.device = cpu")
    count = torch.cuda.device_count()
    if device.index is not None and device.index >= count:
        raise ConfigError(f"training.device = {name}: this machine has {count} CUDA device(s), "
                          f"numbered 0 to {count - 1}")
    return device if device.index is not None else torch.device("cuda", torch.cuda.current_device())


def training_device(config: TrainingConfig) -> torch.device:
    """:func:`resolve_device` of ``training.device``, refusing settings the GPU cannot honour:
    ``training.deterministic`` promises bit-identical resumes, and a GPU's scatter-adds sum in
    no fixed order."""
    device = resolve_device(config.device)
    if device.type != "cpu" and config.deterministic:
        raise ConfigError(f"training.deterministic: bit-identical runs need training.device = cpu, got "
                          f"{config.device} (a GPU's scatter-adds sum in no fixed order)")
    return device
