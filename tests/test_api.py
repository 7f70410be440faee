"""bigembed.open_run: names, vectors, scores, predictions and neighbours, checked against a brute
force over the whole exported table, with the table streamed under a memory budget smaller
than it; and the neighbors / predict commands over it."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

import bigembed
from bigembed.checkpoint import RELATION_PARAMS_KEY, read_current, read_manifest, read_shard_of
from bigembed.cli.main import cli
from bigembed.errors import BigembedError
from bigembed.export import export_run
from bigembed.generator import GraphSpec, write_graph
from bigembed.storage.data_manifest import read_data_manifest
from bigembed.training import train
from tests.conftest import import_files
from tests.test_entity_types import typed_import, write_bipartite

# diagonal operator and dot comparator: a triple's score is sum(h * d_r * t), easy to recompute
DIAG = {"model.dim": 16, "model.operator": "diagonal", "model.comparator": "dot", "model.reciprocal": False,
        "training.epochs": 2, "model.relation_init": "random"}


def _triples(files):
    out = []
    for path in files.values():
        for line in path.read_text().splitlines():
            h, r, t = line.split("\t")
            out.append((h, r, t))
    return out


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("api")
    files = write_graph(GraphSpec(nodes=300, edges=5000, relations=2, communities=6, seed=4), root / "graph")
    data = import_files(root / "data", files, 4)
    run = root / "run"
    train(data, run, None, DIAG, log=lambda _m: None)
    dm = read_data_manifest(data)
    manifest = read_manifest(run, read_current(run))
    export_run(run, manifest, dm, root / "npy", "npy", 16)
    table = np.load(root / "npy" / "embeddings.npy")
    names = (root / "npy" / "names.txt").read_text().splitlines()
    params = read_shard_of(run, manifest, RELATION_PARAMS_KEY).reshape(len(dm.relations), 16)
    return {"data": data, "run": run, "table": table, "names": names, "row": {n: i for i, n in enumerate(names)},
            "params": dict(zip(dm.relations, params, strict=True)), "known": _triples(files)}


def _brute_top(scores: np.ndarray, names: list[str], k: int, leave_out: set[str]) -> list[tuple[str, float]]:
    order = [int(i) for i in np.argsort(-scores, kind="stable") if names[i] not in leave_out]
    return [(names[i], float(scores[i])) for i in order[:k]]


def _same(matches, expected):
    """Same scores in the same order (ties may swap names), and the same names where scores differ."""
    assert [m.score for m in matches] == pytest.approx([s for _n, s in expected], rel=1e-5, abs=1e-5)
    got, want = [m.name for m in matches], [n for n, _s in expected]
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        if g != w:  # only a tie may swap two answers
            assert expected[i][1] == pytest.approx(matches[i].score, rel=1e-5)
            assert any(abs(s - expected[i][1]) < 1e-5 for n, s in expected if n == g)


def _small_budget(t):
    """A memory budget below one table's worth: no partition stays cached between queries."""
    return t["table"].nbytes // 3


def test_names_partitions_and_vectors_are_the_exported_table(trained):
    with bigembed.open_run(trained["run"]) as run:
        assert run.num_nodes() == len(trained["names"]) and run.dim == 16 and run.entity_types == ["node"]
        assert list(run.names()) == trained["names"]
        streamed = np.concatenate([rows for _names, rows in run.partitions()])
        np.testing.assert_array_equal(streamed, trained["table"])
        some = trained["names"][::37]
        np.testing.assert_array_equal(run.vectors(some), trained["table"][[trained["row"][n] for n in some]])
        np.testing.assert_array_equal(run.vector(some[1]), trained["table"][trained["row"][some[1]]])
        mapped = run.embeddings_array()
        assert isinstance(mapped, np.memmap) and not mapped.flags.writeable
        np.testing.assert_array_equal(mapped, trained["table"])


def test_score_is_the_diagonal_models_formula(trained):
    triples = trained["known"][:50]
    T, row, params = trained["table"], trained["row"], trained["params"]
    want = [float(np.sum(T[row[h]] * params[r] * T[row[t]])) for h, r, t in triples]
    with bigembed.open_run(trained["run"]) as run:
        assert run.score(triples).tolist() == pytest.approx(want, rel=1e-5, abs=1e-5)
        assert run.score([(triples[0][0], 1 if triples[0][1] == "r1" else 0, triples[0][2])])[0] == \
            pytest.approx(want[0], rel=1e-5, abs=1e-5)


@pytest.mark.parametrize("budget", ["small", "default"])
def test_neighbors_equal_a_brute_force_over_the_table(trained, budget):
    T, names, row = trained["table"], trained["names"], trained["row"]
    memory = _small_budget(trained) if budget == "small" else None
    queries = names[5:9]
    with bigembed.open_run(trained["run"], memory=memory) as run:
        if budget == "small":
            assert run.memory < T.nbytes  # the table does not fit the budget
        answers = run.neighbors(queries, k=7)
        first = run.partition_reads
        again = run.neighbors(queries[0], k=7)
        second = run.partition_reads - first
    if budget == "small":  # every query streams all 4 partitions (and reads its own row's one)
        assert first >= 4 and second >= 4
    else:  # read once, then kept
        assert (first, second) == (4, 0)
    for q, got in zip(queries, answers, strict=True):
        _same(got, _brute_top(T @ T[row[q]], names, 7, {q}))
        assert all(m.type == "node" for m in got)
    assert [m.name for m in again] == [m.name for m in answers[0]]
    assert [m.score for m in again] == pytest.approx([m.score for m in answers[0]], rel=1e-5)


def test_a_query_holds_one_partition_at_a_time_when_the_table_does_not_fit(trained, monkeypatch):
    import weakref

    from bigembed import api

    alive: list[weakref.ref] = []
    most = [0]
    real = api.read_embeddings

    def counting(*args, **kw):
        rows = real(*args, **kw)
        alive[:] = [r for r in alive if r() is not None]
        alive.append(weakref.ref(rows))
        most[0] = max(most[0], len(alive))
        return rows

    monkeypatch.setattr(api, "read_embeddings", counting)
    with bigembed.open_run(trained["run"], memory=_small_budget(trained)) as run:
        run.neighbors(trained["names"][0], k=3)
        run.predict_tails(trained["names"][1], "r0", k=3)
    assert most[0] == 1  # each partition was let go before the next was read


@pytest.mark.parametrize("filtered", [True, False])
def test_predicted_tails_and_heads_equal_a_brute_force(trained, filtered):
    T, names, row, params = trained["table"], trained["names"], trained["row"], trained["params"]
    known = trained["known"]
    heads = [h for h, r, _t in known if r == "r0"][:3]
    tails = [t for _h, r, t in known if r == "r1"][:3]
    with bigembed.open_run(trained["run"], memory=_small_budget(trained)) as run:
        got_tails = run.predict_tails(heads, "r0", k=8, filtered=filtered)
        got_heads = run.predict_heads("r1", tails, k=8, filtered=filtered)
        one = run.predict_tails(heads[0], "r0", k=8, filtered=filtered)
    assert [m.name for m in one] == [m.name for m in got_tails[0]]
    for h, got in zip(heads, got_tails, strict=True):
        leave = {t for hh, r, t in known if hh == h and r == "r0"} if filtered else set()
        _same(got, _brute_top(T @ (T[row[h]] * params["r0"]), names, 8, leave))
        assert not leave & {m.name for m in got}
    for t, got in zip(tails, got_heads, strict=True):
        leave = {h for h, r, tt in known if tt == t and r == "r1"} if filtered else set()
        _same(got, _brute_top((T * params["r1"]) @ T[row[t]], names, 8, leave))
    if not filtered:  # unfiltered, a known tail of the pair is among the candidates again
        assert any(m.name in {t for hh, r, t in known if hh == heads[0] and r == "r0"}
                   for m in run_all(trained, heads[0]))


def run_all(trained, head):
    with bigembed.open_run(trained["run"]) as run:
        return run.predict_tails(head, "r0", k=len(trained["names"]), filtered=False)


def test_reciprocal_model_predictions_agree_with_its_scores(tmp_path):
    files = write_graph(GraphSpec(nodes=200, edges=3000, relations=2, communities=5, seed=7), tmp_path / "g")
    data = import_files(tmp_path / "data", files, 2)
    train(data, tmp_path / "run", None, {"model.dim": 16, "training.epochs": 1}, log=lambda _m: None)  # defaults
    known = _triples(files)
    h = known[0][0]
    with bigembed.open_run(tmp_path / "run") as run:
        best = run.predict_tails(h, "r0", k=5, filtered=False)
        scores = run.score([(h, "r0", m.name) for m in best])
        heads = run.predict_heads("r0", known[0][2], k=5)
    assert scores.tolist() == pytest.approx([m.score for m in best], rel=1e-4, abs=1e-4)
    assert [m.score for m in best] == sorted((m.score for m in best), reverse=True)
    assert not {m.name for m in heads} & {a for a, r, b in known if r == "r0" and b == known[0][2]}


def test_integer_ids_are_looked_up_without_an_index(tmp_path):
    files = write_graph(GraphSpec(nodes=150, edges=2000, relations=1, communities=5, seed=2, int_ids=True),
                        tmp_path / "g")
    data = import_files(tmp_path / "data", files, 3, ids="int")
    train(data, tmp_path / "run", None, {"model.dim": 8, "training.epochs": 1}, log=lambda _m: None)
    with bigembed.open_run(tmp_path / "run") as run:
        names = list(run.names())
        table = np.concatenate([rows for _n, rows in run.partitions()])
        pick = names[10]
        np.testing.assert_array_equal(run.vector(pick), table[names.index(pick)])
        assert not (data / "index").exists()
        for bad in ("100000", " 5", "-1", "x"):
            with pytest.raises(BigembedError, match="not in"):
                run.vector(bad)


def test_string_names_go_through_an_index_built_once(trained):
    with bigembed.open_run(trained["run"]) as run:
        run.vector(trained["names"][3])
    built = list((trained["data"] / "index").glob("names_node.*.parquet"))
    assert len(built) == 1
    stamp = built[0].stat().st_mtime_ns
    with bigembed.open_run(trained["run"]) as run:
        np.testing.assert_array_equal(run.vector(trained["names"][-1]), trained["table"][-1])
    assert built[0].stat().st_mtime_ns == stamp
    assert not [p for p in (trained["data"] / "index").iterdir() if p.name.startswith(".")]  # no leftovers


def test_several_entity_types(tmp_path):
    data = typed_import(tmp_path / "data", write_bipartite(tmp_path / "g"), 2)
    train(data, tmp_path / "run", None, {"model.dim": 8, "training.epochs": 1}, log=lambda _m: None)
    with bigembed.open_run(tmp_path / "run") as run:
        assert sorted(run.entity_types) == ["item", "user"]
        with pytest.raises(BigembedError, match="several entity types"):
            run.vector("3")  # a user and an item
        with pytest.raises(BigembedError, match="several entity types"):
            list(run.names())
        users = run.neighbors("3", k=5, entity_type="user")
        assert len(users) == 5 and {m.type for m in users} == {"user"} and "3" not in {m.name for m in users}
        items = run.predict_tails("3", "likes", k=4)
        assert {m.type for m in items} == {"item"}
        assert run.num_nodes("item") == sum(1 for _ in run.names("item"))
        with pytest.raises(BigembedError, match="entity type 'place'"):
            run.vector("3", entity_type="place")


def test_bad_queries_get_one_line_errors(trained, tmp_path):
    with bigembed.open_run(trained["run"]) as run:
        with pytest.raises(BigembedError, match="node 'no-such-node': not in"):
            run.neighbors("no-such-node")
        with pytest.raises(BigembedError, match=r"relation .rr1.: not in this DATA .*did you mean .r1.\?"):
            run.predict_tails(trained["names"][0], "rr1")
        with pytest.raises(BigembedError, match="relation 5"):
            run.score([(trained["names"][0], 5, trained["names"][1])])
        with pytest.raises(BigembedError, match="k = 0"):
            run.neighbors(trained["names"][0], k=0)
    with pytest.raises(BigembedError, match="no such RUN directory"):
        bigembed.open_run(tmp_path / "nothing")


def test_neighbors_and_predict_commands(trained):
    runner = CliRunner()
    q = trained["names"][2]
    out = runner.invoke(cli, ["neighbors", str(trained["run"]), q, "-k", "3", "--memory", "1K"])
    assert out.exit_code == 0, out.output
    lines = out.output.strip().split("\n")
    assert lines[0] == "query\trank\tname\tscore\ttype" and len(lines) == 4
    with bigembed.open_run(trained["run"]) as run:
        want = run.neighbors(q, k=3)
        tails = run.predict_tails([q, trained["names"][4]], "r1", k=2)
    assert [line.split("\t")[2] for line in lines[1:]] == [m.name for m in want]
    out = runner.invoke(cli, ["predict", str(trained["run"]), q, trained["names"][4], "-r", "r1", "-k", "2",
                              "--format", "json"])
    assert out.exit_code == 0, out.output
    parsed = json.loads(out.output)
    assert [[a["name"] for a in p["answers"]] for p in parsed] == [[m.name for m in t] for t in tails]
    assert parsed[0]["head"] == q and parsed[0]["relation"] == "r1"
    assert parsed[0]["answers"][0]["score"] == pytest.approx(tails[0][0].score)
    out = runner.invoke(cli, ["predict", str(trained["run"]), q, "-r", "r1", "--heads", "-k", "1"])
    assert out.exit_code == 0 and out.output.startswith("tail\trelation\trank\tname")
    out = runner.invoke(cli, ["neighbors", str(trained["run"]), "nope"])
    assert out.exit_code == 1 and "node 'nope': not in" in out.output
    out = runner.invoke(cli, ["neighbors", str(trained["run"])])
    assert out.exit_code == 2 and "no query" in out.output
    out = runner.invoke(cli, ["neighbors", str(trained["run"]), "--from-file", "-"], input=f"{q}\n\n")
    assert out.exit_code == 0 and len(out.output.strip().split("\n")) == 11


@pytest.mark.parametrize("comparator", ["dot", "cos", "l2", "squared_l2"])
def test_a_faiss_index_answers_as_the_streamed_brute_force(tmp_path, comparator):
    pytest.importorskip("faiss")  # the [faiss] extra; CI installs it with [test]
    files = write_graph(GraphSpec(nodes=250, edges=3000, relations=2, communities=5, seed=1), tmp_path / "g")
    data = import_files(tmp_path / "data", files, 3)
    run = tmp_path / "run"
    train(data, run, None, {"model.dim": 8, "training.epochs": 1, "model.comparator": comparator},
          log=lambda _m: None)
    out = CliRunner().invoke(cli, ["export", str(run), "-o", str(tmp_path / "idx"), "--format", "faiss"])
    assert out.exit_code == 0, out.output
    with bigembed.open_run(run, memory="1K") as opened:
        queries = list(opened.names())[:6]
        streamed = opened.neighbors(queries, k=5)
        indexed = opened.neighbors(queries, k=5, index=tmp_path / "idx")
        names = (tmp_path / "idx" / "names.txt").read_text().splitlines()
    assert names[:6] == queries and len(names) == opened.num_nodes()
    for s, f in zip(streamed, indexed, strict=True):
        assert [m.score for m in f] == pytest.approx([m.score for m in s], rel=1e-4, abs=1e-4)
        assert len(f) == 5 and f[0].name == s[0].name
    out = CliRunner().invoke(cli, ["neighbors", str(run), queries[0], "-k", "2", "--index", str(tmp_path / "idx")])
    assert out.exit_code == 0 and out.output.split("\n")[1].split("\t")[2] == streamed[0][0].name


def test_faiss_index_kinds_and_mistakes(trained, tmp_path, monkeypatch):
    pytest.importorskip("faiss")
    runner = CliRunner()
    ivf = tmp_path / "ivf"
    out = runner.invoke(cli, ["export", str(trained["run"]), "-o", str(ivf), "--format", "faiss",
                              "--faiss-index", "IVF4,Flat"])
    assert out.exit_code == 0, out.output
    assert json.loads((ivf / "faiss.json").read_text())["factory"] == "IVF4,Flat"
    with bigembed.open_run(trained["run"]) as run:
        approx = run.neighbors(trained["names"][0], k=5, index=ivf)
        assert 1 <= len(approx) <= 5 and trained["names"][0] not in {m.name for m in approx}
        # visiting all 4 lists is an exhaustive search: the exact answers
        every = run.neighbors(trained["names"][0], k=5, index=ivf, search="nprobe=4")
        exact = run.neighbors(trained["names"][0], k=5)
        assert [m.name for m in every] == [m.name for m in exact]
        with pytest.raises(BigembedError, match="FAISS refuses it"):
            run.neighbors(trained["names"][0], index=ivf, search="nprob=4")
        meta = json.loads((ivf / "faiss.json").read_text())
        (ivf / "faiss.json").write_text(json.dumps({**meta, "version": meta["version"] + 7}))
        with pytest.raises(BigembedError, match="export it again"):
            run.neighbors(trained["names"][0], index=ivf)
        with pytest.raises(BigembedError, match="faiss.json: missing"):
            run.neighbors(trained["names"][0], index=tmp_path)
    out = runner.invoke(cli, ["neighbors", str(trained["run"]), trained["names"][0], "--search", "nprobe=2"])
    assert out.exit_code == 2 and "--search goes with --index" in out.output
    out = runner.invoke(cli, ["export", str(trained["run"]), "-o", str(tmp_path / "x"), "--faiss-index", "IVF4,Flat"])
    assert out.exit_code == 2 and "--faiss-index goes with --format faiss" in out.output
    out = runner.invoke(cli, ["export", str(trained["run"]), "-o", str(tmp_path / "bad"), "--format", "faiss",
                              "--faiss-index", "NoSuchIndex"])
    assert out.exit_code == 1 and "FAISS cannot build it" in out.output and not (tmp_path / "bad").exists()
    import builtins

    real_import = builtins.__import__

    def no_faiss(name, *args, **kw):
        if name == "faiss":
            raise ImportError("no faiss")
        return real_import(name, *args, **kw)

    monkeypatch.setattr(builtins, "__import__", no_faiss)
    out = runner.invoke(cli, ["export", str(trained["run"]), "-o", str(tmp_path / "none"), "--format", "faiss"])
    assert out.exit_code == 1 and "pip install 'bigembed[faiss]'" in out.output
    assert not (tmp_path / "none").exists()


def test_a_damaged_name_index_is_built_again(trained):
    with bigembed.open_run(trained["run"]) as run:
        run.vector(trained["names"][0])
    (index,) = (trained["data"] / "index").glob("names_node.*.parquet")
    index.write_bytes(b"not parquet at all")
    with bigembed.open_run(trained["run"]) as run:
        np.testing.assert_array_equal(run.vector(trained["names"][7]), trained["table"][7])
    assert index.read_bytes()[:4] == b"PAR1"


def test_a_name_index_that_cannot_be_written_is_one_line(trained, monkeypatch):
    from bigembed import api

    def full_disk(data, t, path, memory):
        path.with_name(".partial").write_bytes(b"x")
        path.with_name(".partial").unlink()
        raise OSError(28, "No space left on device")

    for old in (trained["data"] / "index").glob("names_node.*.parquet"):
        old.unlink()
    monkeypatch.setattr(api, "build_name_index", full_disk)
    with bigembed.open_run(trained["run"]) as run, \
            pytest.raises(BigembedError, match=r"cannot write the name index \(No space left on device\)"):
        run.vector(trained["names"][0])
    assert not list((trained["data"] / "index").glob("*names_node*"))


def test_a_damaged_faiss_index_is_one_line(trained, tmp_path):
    pytest.importorskip("faiss")
    out = CliRunner().invoke(cli, ["export", str(trained["run"]), "-o", str(tmp_path / "idx"), "--format", "faiss"])
    assert out.exit_code == 0, out.output
    (tmp_path / "idx" / "index.faiss").write_bytes(b"garbage")
    out = CliRunner().invoke(cli, ["neighbors", str(trained["run"]), trained["names"][0], "--index",
                                   str(tmp_path / "idx")])
    assert out.exit_code == 1 and "index.faiss: FAISS cannot read it" in out.output and "Traceback" not in out.output
