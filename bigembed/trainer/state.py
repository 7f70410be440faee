"""In-memory training state of one partition: its embeddings and optimizer rows."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class PartitionState:
    """``emb``: (n, dim) float32; ``adagrad``: (n,) float32 per-row accumulator, or (n, dim)
    per-coordinate accumulators (``training.optimizer = "adagrad"``)."""

    emb: Tensor
    adagrad: Tensor

    @classmethod
    def initial(cls, num_rows: int, dim: int, scale: float, generator: torch.Generator,
                per_coordinate: bool = False) -> PartitionState:
        emb = torch.randn(num_rows, dim, generator=generator).mul_(scale)
        return cls(emb, torch.zeros((num_rows, dim) if per_coordinate else (num_rows,)))
