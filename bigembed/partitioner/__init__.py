"""The partitioner: turns edge files into a DATA directory of partitions and buckets.

Policy: one pass over the input (:func:`bigembed.partitioner.engine.import_data`, what
``bigembed import`` runs). Arrow parses blocks of lines, DuckDB keeps the edges and the node
dictionary within the import's memory budget (spilling to disk beyond it), and the edges come
back joined to their nodes' ranks, in input order, into compact (lhs partition, rhs
partition) buckets. A file or a pipe is read once.

Invariants: each entity type's nodes are ranked by a seeded hash of their name (ties broken
by the name) and dealt to P partitions in rank order, so partition sizes differ by at most
one; an integer-id graph (``ids="int"``) skips the dictionary and puts node ``i`` at
partition ``i % P``, offset ``i // P``; memory is bounded by the budget, not by the number
of nodes or edges.

:func:`plan_import` and :func:`write_plan` are the earlier two-pass importer (a Python
dictionary in memory, every file read twice). They stay as the reference the engine is
tested against, and for :class:`PartitionPlan`, a value that can be printed and checked
before anything is written.

Example::

    spec = ImportSpec(sources=[Source("train", Path("train.tsv"))], num_partitions=4)
    manifest, stats = import_data(spec, Path("data"))   # DATA/manifest.json, names, buckets
    print(stats.summary(spec.ids, spec.type_names))
"""

from bigembed.partitioner.plan import ImportSpec, PartitionPlan, Source, plan_import
from bigembed.partitioner.writer import write_plan

__all__ = ["ImportSpec", "PartitionPlan", "Source", "plan_import", "write_plan"]
