"""The partitioner: turns edge files into a DATA directory of partitions and buckets.

Policy: two streaming passes. Pass 1 (:func:`plan_import`) reads every file once
to build the entity and relation dictionaries and returns a
:class:`PartitionPlan`: a value that can be printed and tested before a byte is
written. Pass 2 (:func:`write_plan`) reads the files again and appends each chunk's
edges to its (lhs partition, rhs partition) bucket.

Invariants: nodes are spread over P partitions by a seeded random permutation, so
partition sizes differ by at most one; an integer-id graph (``ids="int"``) skips
the dictionary and puts node ``i`` at partition ``i % P``, offset ``i // P``;
memory grows with the number of nodes, never with the number of edges.

Example::

    spec = ImportSpec(sources=[Source("train", Path("train.tsv"))], num_partitions=4)
    plan = plan_import(spec)          # pass 1: dictionary + sizes, nothing written
    print(plan.summary())
    write_plan(plan, Path("data"))    # pass 2: DATA/manifest.json, names, buckets
"""

from bigembed.partitioner.plan import ImportSpec, PartitionPlan, Source, plan_import
from bigembed.partitioner.writer import write_plan

__all__ = ["ImportSpec", "PartitionPlan", "Source", "plan_import", "write_plan"]
