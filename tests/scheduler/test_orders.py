from collections import Counter

import numpy as np
import pytest

from bigembed.errors import BigembedError, ConfigError
from bigembed.scheduler import PartitionBuffer, order_buckets
from bigembed.storage.edges import Bucket

ORDERS = ["inside_out", "outside_in", "random", "sequential"]


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("P", [1, 2, 3, 4, 7])
def test_every_order_visits_every_bucket_exactly_once(order, P):
    for seed in range(3):
        buckets = order_buckets(P, order, np.random.default_rng(seed))
        assert Counter(buckets) == Counter(Bucket(i, j) for i in range(P) for j in range(P))


@pytest.mark.parametrize("P", [2, 4, 7])
def test_inside_out_needs_one_new_partition_per_step_with_two_slots(P):
    buckets = order_buckets(P, "inside_out", np.random.default_rng(0))
    loads = []
    buf = PartitionBuffer(2, load=lambda p: loads.append(p) or p, store=lambda p, v: None)
    for b in buckets:
        buf.acquire([b.lhs, b.rhs])
    # Each partition k > 0 is loaded when its shell starts, then once per earlier partition:
    # with inside-out the total is 1 + sum_{k=1}^{P-1} (k + 1) at most.
    assert len(loads) <= 1 + sum(k + 1 for k in range(1, P))
    assert len(loads) < 2 * len(buckets)


def test_orders_are_seeded():
    a = order_buckets(5, "random", np.random.default_rng(3))
    b = order_buckets(5, "random", np.random.default_rng(3))
    c = order_buckets(5, "random", np.random.default_rng(4))
    assert a == b and a != c


def test_unknown_order_lists_the_known_ones():
    with pytest.raises(ConfigError, match="inside_out, outside_in, random, sequential"):
        order_buckets(2, "spiral", np.random.default_rng(0))


def test_buffer_respects_capacity_and_writes_back_dirty_partitions():
    stored = []
    buf = PartitionBuffer(2, load=lambda p: f"part{p}", store=lambda p, v: stored.append((p, v)))
    buf.acquire([0, 1])
    assert sorted(buf.resident()) == [0, 1]
    buf.acquire([1, 2])  # 0 is evicted and written back
    assert sorted(buf.resident()) == [1, 2]
    assert stored == [(0, "part0")]
    assert sorted(buf.flush()) == [1, 2]
    assert buf.dirty() == set()
    with pytest.raises(BigembedError, match="needs 3 partitions but the buffer holds 2"):
        buf.acquire([3, 4, 5])


def test_buffer_rejects_capacity_below_two():
    with pytest.raises(BigembedError, match="capacity must be >= 2"):
        PartitionBuffer(1, load=lambda p: p, store=lambda p, v: None)
