"""The trainer: model pieces, negative sampling, row-wise Adagrad and the per-bucket loop.

It works on tensors handed to it and never touches files.
"""

from bigembed.trainer.bucket import BucketStats, BucketTrainer, bucket_seed, plan_batches
from bigembed.trainer.model import Model
from bigembed.trainer.relations import RelationSpec, RelationState, initial_params, relation_specs
from bigembed.trainer.state import PartitionState

__all__ = [
    "BucketStats",
    "BucketTrainer",
    "Model",
    "PartitionState",
    "RelationSpec",
    "RelationState",
    "bucket_seed",
    "initial_params",
    "plan_batches",
    "relation_specs",
]
