"""In-memory training state: a partition's embeddings and optimizer rows, relation parameters."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class PartitionState:
    """``emb``: (n, dim) float32; ``adagrad``: (n,) float32 per-row accumulator."""

    emb: Tensor
    adagrad: Tensor

    @classmethod
    def initial(cls, num_rows: int, dim: int, scale: float, generator: torch.Generator) -> PartitionState:
        emb = torch.randn(num_rows, dim, generator=generator).mul_(scale)
        return cls(emb, torch.zeros(num_rows))


@dataclass
class RelationState:
    """``params``: (num_relations, dim) or None; ``adagrad``: same shape accumulator."""

    params: Tensor | None
    adagrad: Tensor | None
