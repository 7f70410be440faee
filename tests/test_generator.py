import io
import re
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

import bigembed.generator as gen
from bigembed.cli.main import cli
from bigembed.errors import BigembedError
from bigembed.generator import GraphSpec, format_lines, generate_edges, write_edges, write_graph


def edges_of(spec, chunk=None):
    return [np.concatenate(x) for x in zip(*generate_edges(spec, chunk=chunk))]


@pytest.fixture
def small_blocks(monkeypatch):
    """Blocks of 1000 edges, so small graphs span many blocks and threads."""
    monkeypatch.setattr(gen, "_BLOCK", 1000)


def test_generator_is_seeded_and_sized(small_blocks):
    spec = GraphSpec(nodes=500, edges=12345, relations=4, communities=7, seed=9)
    a = edges_of(spec, chunk=1000)
    b = edges_of(spec, chunk=777)
    assert len(a[0]) == 12345
    for x, y in zip(a, b):
        assert np.array_equal(x, y)  # the chunk size does not change the edges
    assert a[0].max() < 500 and a[1].max() < 4 and a[2].min() >= 0 and a[2].max() < 500
    other = edges_of(GraphSpec(nodes=500, edges=12345, relations=4, communities=7, seed=10))
    assert not np.array_equal(a[0], other[0])


def test_degrees_are_heavy_tailed(small_blocks):
    spec = GraphSpec(nodes=20000, edges=200000, relations=3, communities=20, seed=1)
    lhs, _, rhs = edges_of(spec)
    degrees = np.sort(np.bincount(np.concatenate([lhs, rhs]), minlength=spec.nodes))[::-1]
    top = degrees[: spec.nodes // 100].sum() / degrees.sum()
    assert top > 0.4  # the top 1% of nodes hold a large share of the endpoints (Zipf: about half)
    assert degrees[0] > 100 * np.median(degrees)
    for side in (lhs, rhs):  # both ends are heavy-tailed
        d = np.sort(np.bincount(side, minlength=spec.nodes))[::-1]
        assert d[: spec.nodes // 100].sum() / d.sum() > 0.3
    flat = edges_of(GraphSpec(nodes=20000, edges=200000, relations=3, communities=20, seed=1, exponent=0.0))
    d = np.sort(np.bincount(np.concatenate([flat[0], flat[2]]), minlength=spec.nodes))[::-1]
    assert d[: spec.nodes // 100].sum() / d.sum() < 0.05  # exponent 0: no hubs


def test_top_node_of_the_popularity_law_has_its_zipf_weight():
    spec = GraphSpec(nodes=10000, edges=400000, relations=1, communities=1, noise=0.0, seed=2)
    lhs, _, _ = edges_of(spec)
    counts = np.sort(np.bincount(lhs, minlength=spec.nodes))[::-1]
    harmonic = np.sum(1.0 / np.arange(1, spec.nodes + 1))
    assert counts[0] / spec.edges == pytest.approx(1 / harmonic, rel=0.03)
    assert counts[1] / spec.edges == pytest.approx(1 / (2 * harmonic), rel=0.05)


@pytest.mark.parametrize("noise", [0.0, 0.2])
def test_structure_is_planted(small_blocks, noise):
    spec = GraphSpec(nodes=3000, edges=100000, relations=3, communities=10, noise=noise, seed=4)
    lhs, rel, rhs = edges_of(spec)
    sampler = gen._Sampler(spec)
    community = sampler.community()
    assert np.bincount(community).min() >= spec.nodes // spec.communities  # every community is populated
    target = sampler.targets[rel, community[lhs]]
    hit = np.mean(community[rhs] == target)
    # a noisy rhs is uniform, so it still lands in the target community 1 time in C
    assert hit == pytest.approx(1 - noise + noise / spec.communities, abs=0.01)
    for r in range(spec.relations):  # each relation maps communities by a permutation
        assert sorted(sampler.targets[r].tolist()) == list(range(spec.communities))


def test_write_graph_splits_and_format(tmp_path, small_blocks):
    spec = GraphSpec(nodes=1000, edges=40000, relations=12, seed=0)
    paths = write_graph(spec, tmp_path)
    lines = {k: p.read_text().splitlines() for k, p in paths.items()}
    assert sum(len(v) for v in lines.values()) == 40000
    for name in ("valid", "test"):
        assert len(lines[name]) == pytest.approx(0.05 * 40000, abs=5 * np.sqrt(0.05 * 40000))
    pattern = re.compile(r"n(0|[1-9]\d*)\tr(0|[1-9]\d*)\tn(0|[1-9]\d*)")
    for line in lines["train"] + lines["valid"] + lines["test"]:
        m = pattern.fullmatch(line)
        assert m, line
        assert int(m[1]) < 1000 and int(m[2]) < 12 and int(m[3]) < 1000
    # the three files together are exactly the edges generate_edges draws
    lhs, rel, rhs = edges_of(spec)
    want = sorted(f"n{a}\tr{b}\tn{c}" for a, b, c in zip(lhs.tolist(), rel.tolist(), rhs.tolist()))
    assert sorted(lines["train"] + lines["valid"] + lines["test"]) == want


def test_write_graph_is_deterministic_and_thread_independent(tmp_path, small_blocks, monkeypatch):
    spec = GraphSpec(nodes=2000, edges=30000, seed=5, int_ids=True)
    monkeypatch.setattr(gen, "_workers", lambda: 3)
    a = write_graph(spec, tmp_path / "a")
    monkeypatch.setattr(gen, "_workers", lambda: 1)
    b = write_graph(spec, tmp_path / "b")
    for name in ("train", "valid", "test"):
        assert a[name].read_bytes() == b[name].read_bytes()
    c = write_graph(GraphSpec(nodes=2000, edges=30000, seed=6, int_ids=True), tmp_path / "c")
    assert c["train"].read_bytes() != a["train"].read_bytes()
    for line in a["train"].read_text().splitlines():
        lhs, rel, rhs = (int(x) for x in line.split("\t"))
        assert 0 <= lhs < 2000 and 0 <= rel < 3 and 0 <= rhs < 2000


@pytest.mark.parametrize("spec", [
    GraphSpec(nodes=123_456_789, edges=5000, relations=12, seed=1),  # 9-digit ids: the grouped path
    GraphSpec(nodes=3 * 10**9, edges=3000, relations=2, seed=2, int_ids=True),  # 10 digits: the masked path
    GraphSpec(nodes=10**5, edges=3000, relations=100_000, seed=3),  # relation ids through _eight_digits
])
def test_lines_are_the_edges_in_decimal(spec, small_blocks):
    train, valid, test = io.BytesIO(), io.BytesIO(), io.BytesIO()
    write_edges(spec, train, valid, test)
    sampler = gen._Sampler(spec)
    want: list[list[str]] = [[], [], []]
    for k, m in gen._blocks(spec):
        b = sampler.block(k, m, (0.05, 0.05))
        part = np.repeat(np.arange(3), b.sizes)
        for x, y, z, p in zip(b.lhs.tolist(), b.rel.tolist(), b.rhs.tolist(), part.tolist()):
            want[p].append(f"{x}\t{y}\t{z}\n" if spec.int_ids else f"n{x}\tr{y}\tn{z}\n")
    for stream, lines in zip((train, valid, test), want):
        assert stream.getvalue() == "".join(lines).encode()


def test_skipped_splits_leave_the_others_alone(small_blocks):
    spec = GraphSpec(nodes=5000, edges=20000, seed=3)
    train, valid, test = io.BytesIO(), io.BytesIO(), io.BytesIO()
    write_edges(spec, train, valid, test)
    only = io.BytesIO()
    write_edges(spec, only)
    assert only.getvalue() == train.getvalue()
    train2, test2 = io.BytesIO(), io.BytesIO()
    write_edges(spec, train2, None, test2)
    assert train2.getvalue() == train.getvalue() and test2.getvalue() == test.getvalue()


@pytest.mark.parametrize("kw, msg", [({"nodes": 1}, "--nodes"), ({"communities": 0}, "--communities"),
                                     ({"noise": 2.0}, "--noise"), ({"seed": -1}, "--seed")])
def test_bad_specs(kw, msg):
    with pytest.raises(BigembedError, match=msg):
        GraphSpec(**kw).validate()


def test_vectorised_lines_equal_python_formatting():
    rng = np.random.default_rng(4)
    edge_cases = np.array([0, 1, 9, 10, 99, 100, 999_999, 10**12, 2**63 - 1], dtype=np.int64)
    a = np.concatenate([edge_cases, rng.integers(0, 10**9, 500)])
    r = rng.integers(0, 12, a.shape[0])
    b = a[::-1].copy()
    want = "".join(f"n{x}\tr{y}\tn{z}\n" for x, y, z in zip(a.tolist(), r.tolist(), b.tolist())).encode()
    assert format_lines([b"n", a, b"\tr", r, b"\tn", b, b"\n"]) == want
    assert format_lines([a[:1], b"\n"]) == b"0\n"


@pytest.mark.parametrize("top", [10, 10**4, 10**8])
def test_grouped_lines_equal_python_formatting(top):
    rng = np.random.default_rng(top)
    edge_cases = np.array([0, 1, 9, 10, 99, 9999, 10**4, top - 1], dtype=np.int64)
    a = np.concatenate([edge_cases[edge_cases < top], rng.integers(0, top, 3000)])
    b = rng.permutation(a)
    r = rng.integers(0, 1000, a.shape[0])
    want = "".join(f"{x},{y}:{z}|\n" for x, y, z in zip(a.tolist(), r.tolist(), b.tolist())).encode()
    assert format_lines([a, b",", r, b":", b, b"|\n"]) == want
    want = "".join(f"id-{x}\n" for x in a.tolist()).encode()
    assert format_lines([b"id-", a, b"\n"]) == want


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_stdout_mode_writes_the_train_file_bytes(tmp_path):
    args = ["--nodes", "3000", "--edges", "20000", "--seed", "7", "--relations", "4", "--no-progress"]
    r = run("generate", "-o", tmp_path / "files", *args)
    assert r.exit_code == 0, r.output
    r = run("generate", "-o", "-", *args)
    assert r.exit_code == 0, r.output
    assert r.stdout_bytes == (tmp_path / "files" / "train.tsv").read_bytes()
    r = run("generate", "-o", "-", "--holdout", tmp_path / "held", *args)
    assert r.exit_code == 0, r.output
    assert r.stdout_bytes == (tmp_path / "files" / "train.tsv").read_bytes()
    for name in ("valid", "test"):
        assert (tmp_path / "held" / f"{name}.tsv").read_bytes() == (tmp_path / "files" / f"{name}.tsv").read_bytes()
        assert (tmp_path / "held" / f"{name}.tsv").stat().st_size > 0
    assert sorted(p.name for p in (tmp_path / "held").iterdir()) == ["test.tsv", "valid.tsv"]


def test_holdout_needs_stdout(tmp_path):
    r = run("generate", "-o", tmp_path / "g", "--holdout", tmp_path / "h", "--nodes", "50", "--edges", "50")
    assert r.exit_code == 2 and "--holdout" in r.output


def test_stdout_mode_through_a_pipe_and_a_reader_that_stops():
    cmd = [sys.executable, "-m", "bigembed.cli.main", "generate", "-o", "-", "--nodes", "1000",
           "--edges", "50000", "--seed", "3", "--progress"]
    full = subprocess.run(cmd, capture_output=True, check=True)
    lines = full.stdout.decode().splitlines()
    assert 0.85 * 50000 < len(lines) < 0.95 * 50000
    assert all(re.fullmatch(r"n\d+\tr\d\tn\d+", line) for line in lines)  # nothing but edges on stdout
    # the reader goes away after one line: a quiet stop, no traceback
    big = cmd[:-1] + ["--no-progress"]
    big[big.index("50000")] = "20000000"
    proc = subprocess.Popen(big, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    assert re.fullmatch(rb"n\d+\tr\d\tn\d+\n", proc.stdout.readline())
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(timeout=60) == 1
    assert b"Traceback" not in err and b"Exception" not in err, err


def test_many_fields_in_a_line():
    rng = np.random.default_rng(0)
    columns = [rng.integers(0, 10 ** int(rng.integers(1, 9)), 300) for _ in range(7)]
    fields: list = []
    for c in columns:
        fields += [c, b"|"]
    fields[-1] = b"\n"
    want = "".join("|".join(map(str, row)) + "\n" for row in zip(*(c.tolist() for c in columns))).encode()
    assert format_lines(fields) == want
