from collections import Counter
from itertools import pairwise

import numpy as np
import pytest

from bigembed.errors import BigembedError, ConfigError
from bigembed.scheduler import PartitionBuffer, order_buckets
from bigembed.scheduler.orders import ORDERS, beta_states, beta_swaps
from bigembed.storage.edges import Bucket


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
    buf = PartitionBuffer(2, load=lambda p: loads.append(p) or p, store=lambda p, v, evicted: None)
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
    with pytest.raises(ConfigError, match="inside_out, outside_in, beta, random, sequential"):
        order_buckets(2, "spiral", np.random.default_rng(0))


def test_buffer_respects_capacity_and_writes_back_dirty_partitions():
    stored = []
    buf = PartitionBuffer(2, load=lambda p: f"part{p}", store=lambda p, v, evicted: stored.append((p, v)))
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
        PartitionBuffer(1, load=lambda p: p, store=lambda p, v, evicted: None)


@pytest.mark.parametrize("c", [2, 3, 4, 6])
@pytest.mark.parametrize("P", [1, 2, 3, 5, 8, 16])
def test_beta_visits_every_bucket_once_with_at_most_c_partitions_resident(P, c):
    for seed in range(2):
        buckets = order_buckets(P, "beta", np.random.default_rng(seed), c)
        assert Counter(buckets) == Counter(Bucket(i, j) for i in range(P) for j in range(P))
    assert all(len(state) <= c for state in beta_states(P, c))


def _loads(buckets: list[Bucket], c: int, future: bool) -> list[int]:
    loads: list[int] = []
    buf = PartitionBuffer(c, load=lambda p: loads.append(p) or p, store=lambda p, v, evicted: None)
    pairs = [(b.lhs, b.rhs) for b in buckets]
    for k, b in enumerate(buckets):
        buf.acquire([b.lhs, b.rhs], pairs if future else None, k + 1)
        assert len(buf.resident()) <= c
    return loads


@pytest.mark.parametrize("c", [2, 3, 4, 5])
@pytest.mark.parametrize("P", [2, 4, 7, 16, 23])
def test_beta_swaps_match_the_formula_and_the_pair_bound(P, c):
    """Loads with the furthest-next-use buffer equal c + beta_swaps(P, c), and no order can do
    better than the pair bound: every pair of partitions must share the buffer, the first c
    make C(c, 2) pairs and each later load makes at most c - 1 new ones."""
    states = beta_states(P, c)
    swaps = sum(len(set(b) - set(a)) for a, b in pairwise(states))
    assert swaps == beta_swaps(P, c)
    for seed in range(2):
        loads = _loads(order_buckets(P, "beta", np.random.default_rng(seed), c), c, future=True)
        assert len(loads) == min(P, c) + beta_swaps(P, c)
    pair_bound = -(-(P * (P - 1) // 2 - c * (c - 1) // 2) // (c - 1)) if c < P else 0
    assert pair_bound <= beta_swaps(P, c) <= pair_bound + P  # BETA is close to the bound


def test_beta_formula_values():
    assert beta_swaps(4, 2) == 5  # = the pair bound: (6 - 1) / 1
    assert beta_swaps(16, 4) == 42  # pair bound 38
    assert beta_swaps(16, 16) == 0 and beta_swaps(3, 5) == 0
    assert beta_swaps(8, 2) == (8 - 1) * (8 - 2) // 2 + 8 - 2


def test_beta_loads_fewer_partitions_than_inside_out_for_the_same_buffer():
    P, c = 16, 4
    beta = len(_loads(order_buckets(P, "beta", np.random.default_rng(0), c), c, future=True))
    inside = len(_loads(order_buckets(P, "inside_out", np.random.default_rng(0)), c, future=True))
    assert beta < inside


def test_the_buffer_evicts_the_partition_needed_furthest_in_the_future():
    loads: list[int] = []
    buf = PartitionBuffer(3, load=lambda p: loads.append(p) or p, store=lambda p, v, evicted: None)
    buf.acquire([0, 1])
    buf.acquire([2])
    future = [(3,), (0,), (2,), (1,)]
    buf.acquire([3], future, 1)  # 1 is needed last: evicted, though 0 is least recently used
    assert sorted(buf.resident()) == [0, 2, 3]
    buf.acquire([1], [(0,), (2,), (1,)], 3)  # nothing after: the least recently used (0) goes
    assert sorted(buf.resident()) == [1, 2, 3]


def _run(order: list[Bucket], c: int, prefetch: bool, load=None) -> PartitionBuffer:
    buf = PartitionBuffer(c, load=load or (lambda p: p), store=lambda p, v, evicted: None)
    pairs = [(b.lhs, b.rhs) for b in order]
    for k, b in enumerate(order):
        buf.acquire([b.lhs, b.rhs], pairs, k + 1)
        assert buf[b.lhs] == b.lhs and buf[b.rhs] == b.rhs
        assert len(buf.resident()) <= c
        if prefetch:
            buf.prefetch(pairs, k + 1, (b.lhs, b.rhs))
    buf.close()
    return buf


@pytest.mark.parametrize(("P", "c"), [(4, 3), (8, 4), (16, 4), (16, 5), (7, 3), (23, 6)])
def test_prefetching_with_beta_planned_for_one_slot_less_hides_almost_every_load(P, c):
    """Training plans the beta order for c - 1 partitions and prefetches into the c-th slot:
    the loads are those of the plan (c - 1 + beta_swaps(P, c - 1), or fewer) and all but
    the first few happen in the background."""
    for seed in range(3):
        buckets = order_buckets(P, "beta", np.random.default_rng(seed), c - 1)
        buf = _run(buckets, c, True)
        assert buf.loads <= (c - 1) + beta_swaps(P, c - 1)
        assert buf.prefetched >= buf.loads - c
        assert buf.loads >= _run(buckets, c, False).loads  # demand paging is the floor


def test_a_failed_background_load_is_raised_to_the_trainer():
    def load(p: int) -> int:
        if p == 3:
            raise OSError("disk gone")
        return p

    with pytest.raises(OSError, match="disk gone"):
        _run(order_buckets(4, "beta", np.random.default_rng(0), 2), 3, True, load)
