"""On-disk formats: edge buckets, entity names, embedding shards, atomic writes.

Nothing here knows about training. Every format carries a version checked on read.
"""
