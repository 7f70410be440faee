"""In-memory training state of one partition: its embeddings and optimizer rows."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

INIT_BLOCK_VALUES = 1 << 22  # float32 values drawn at a time for a half-precision table (16 MB)


@dataclass
class PartitionState:
    """``emb``: (n, dim) float32, float16 or bfloat16 (``training.storage_dtype``: the math
    widens gathered rows to float32); ``adagrad``: (n,) float32 per-row accumulator, or (n, dim)
    per-coordinate accumulators (``training.optimizer = "adagrad"``). ``ranges[t]`` is the
    ``[start, stop)`` of entity type ``t``'s rows (None: one type, all rows)."""

    emb: Tensor
    adagrad: Tensor
    ranges: tuple[tuple[int, int], ...] | None = None

    def range_of(self, entity_type: int) -> tuple[int, int]:
        if self.ranges is None:
            return 0, self.emb.shape[0]
        return self.ranges[entity_type]

    @classmethod
    def initial(cls, num_rows: int, dim: int, scale: float, generator: torch.Generator,
                per_coordinate: bool = False, dtype: torch.dtype = torch.float32) -> PartitionState:
        if dtype == torch.float32:
            emb = torch.randn(num_rows, dim, generator=generator).mul_(scale)
        else:  # drawn in float32 a block at a time: never a float32 copy of the whole table
            emb = torch.empty(num_rows, dim, dtype=dtype)
            step = max(1, INIT_BLOCK_VALUES // max(1, dim))
            for start in range(0, num_rows, step):
                stop = min(num_rows, start + step)
                emb[start:stop] = torch.randn(stop - start, dim, generator=generator).mul_(scale)
        return cls(emb, torch.zeros((num_rows, dim) if per_coordinate else (num_rows,)))
