"""Meta-tests: one source of truth per registry, and every registered name under test.

The config's choices (checked when a config is loaded, listed by ``bigembed config-help``)
must be exactly the names the code can build, in the same order; a name that is not
registered is refused with the list of those that are; and the shared test cases (the model
zoo, the order tests) cover every registered name, so adding one without a test fails here.
"""

from __future__ import annotations

import numpy as np
import pytest

from bigembed import config
from bigembed.errors import ConfigError
from bigembed.scheduler import orders
from bigembed.storage import dtypes
from bigembed.trainer import model
from tests import test_model_zoo


@pytest.mark.parametrize("choices, registry", [
    (config.OPERATORS, model.OPERATORS),
    (config.COMPARATORS, model.COMPARATORS),
    (config.LOSSES, model.LOSSES),
    (config.BUCKET_ORDERS, orders.ORDERS),
    (config.STORAGE_DTYPES, dtypes.TORCH_DTYPES),
], ids=["operators", "comparators", "losses", "bucket orders", "storage dtypes"])
def test_config_choices_are_the_registries(choices, registry):
    assert tuple(choices) == tuple(registry)


@pytest.mark.parametrize("make, what", [
    (lambda name: model.make_operator(name), "model.operator"),
    (lambda name: model.make_comparator(name), "model.comparator"),
    (lambda name: model.make_loss(name, 0.1), "model.loss"),
    (lambda name: orders.order_buckets(2, name, np.random.default_rng(0)), "training.bucket_order"),
], ids=["operator", "comparator", "loss", "order"])
def test_an_unknown_name_is_refused_with_the_known_ones(make, what):
    with pytest.raises(ConfigError) as info:
        make("no_such_thing")
    message = str(info.value)
    assert message.startswith(what) and "'no_such_thing'" in message


def test_an_unknown_name_lists_every_registered_one():
    for make, registry in ((model.make_operator, model.OPERATORS), (model.make_comparator, model.COMPARATORS)):
        with pytest.raises(ConfigError) as info:
            make("x")
        assert all(name in str(info.value) for name in registry)
    with pytest.raises(ConfigError, match=", ".join(orders.ORDERS)):
        orders.order_buckets(2, "x", np.random.default_rng(0))
    with pytest.raises(ConfigError, match=", ".join(model.LOSSES)):
        model.make_loss("x", 0.1)


def test_every_registered_name_is_covered_by_the_shared_cases():
    assert set(test_model_zoo.ZOO_OPERATORS) == set(model.OPERATORS)
    comparators = {c for c, _ in test_model_zoo.ZOO_COMPARATOR_LOSS} | {test_model_zoo.ROTATION_COMPARATOR}
    assert comparators == set(model.COMPARATORS)
    assert {loss for _, loss in test_model_zoo.ZOO_COMPARATOR_LOSS} == set(model.LOSSES)
    from tests.scheduler import test_orders

    assert list(test_orders.ORDERS) == list(orders.ORDERS)


def test_each_constant_lives_once():
    """The slab size, the byte formatter and Adagrad's epsilon: defined in one module each."""
    from bigembed import describe
    from bigembed.scheduler import memory
    from bigembed.trainer import adagrad, bucket, native

    assert bucket.SLAB_EDGES is memory.SLAB_EDGES
    assert describe.human is memory.human and memory.human(5 << 30) == "5.0 GiB"
    source = native.SOURCE.read_text()
    assert "1e-10" not in source and "eps" in source  # the C kernel takes it from adagrad.EPS
    assert adagrad.EPS == 1e-10
