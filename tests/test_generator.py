from collections import Counter

import numpy as np
import pytest

from bigembed.errors import BigembedError
from bigembed.generator import GraphSpec, generate_edges, write_graph


def test_generator_is_seeded_and_sized():
    spec = GraphSpec(nodes=500, edges=12345, relations=4, communities=7, seed=9)
    a = [np.concatenate(x) for x in zip(*generate_edges(spec, chunk=1000))]
    b = [np.concatenate(x) for x in zip(*generate_edges(spec, chunk=5000))]
    assert len(a[0]) == 12345
    for x, y in zip(a, b):
        assert x.shape == y.shape
    assert a[0].max() < 500 and a[1].max() < 4 and a[2].min() >= 0


def test_degrees_are_heavy_tailed_and_structure_is_planted():
    spec = GraphSpec(nodes=2000, edges=50000, relations=2, communities=10, noise=0.0, seed=1)
    lhs, rel, rhs = (np.concatenate(x) for x in zip(*generate_edges(spec)))
    degrees = np.bincount(lhs, minlength=2000)
    assert degrees.max() > 20 * np.median(degrees[degrees > 0])
    # With no noise, each (lhs community, relation) maps to exactly one rhs community.
    from bigembed.generator import _Sampler

    sampler = _Sampler(spec, np.random.default_rng(1))
    pairs = Counter(zip(sampler.community[lhs].tolist(), rel.tolist(), sampler.community[rhs].tolist()))
    keys = Counter((c, r) for c, r, _ in pairs)
    assert max(keys.values()) == 1


def test_write_graph_splits(tmp_path):
    paths = write_graph(GraphSpec(nodes=100, edges=2000, seed=0), tmp_path)
    counts = {k: p.read_text().count("\n") for k, p in paths.items()}
    assert sum(counts.values()) == 2000 and counts["train"] > counts["test"] > 0


@pytest.mark.parametrize("kw, msg", [({"nodes": 1}, "--nodes"), ({"communities": 0}, "--communities"),
                                     ({"noise": 2.0}, "--noise")])
def test_bad_specs(kw, msg):
    with pytest.raises(BigembedError, match=msg):
        GraphSpec(**kw).validate()


def test_vectorised_lines_equal_python_formatting():
    from bigembed.generator import format_lines

    rng = np.random.default_rng(4)
    edge_cases = np.array([0, 1, 9, 10, 99, 100, 999_999, 10**12, 2**63 - 1], dtype=np.int64)
    a = np.concatenate([edge_cases, rng.integers(0, 10**9, 500)])
    r = rng.integers(0, 12, a.shape[0])
    b = a[::-1].copy()
    want = "".join(f"n{x}\tr{y}\tn{z}\n" for x, y, z in zip(a.tolist(), r.tolist(), b.tolist())).encode()
    assert format_lines([b"n", a, b"\tr", r, b"\tn", b, b"\n"]) == want
    assert format_lines([a[:1], b"\n"]) == b"0\n"
