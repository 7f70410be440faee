"""`bigembed report`: the page is self-contained, its numbers are stats.jsonl's, and it renders
from a run's files alone, without epochs, with damaged lines and without matplotlib."""

from __future__ import annotations

import json
import shutil
import sys
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from bigembed.cli.main import cli
from bigembed.report import data_summary
from bigembed.scheduler.memory import human
from bigembed.storage.data_manifest import read_data_manifest
from tests.conftest import write_tiny_graph

EPOCHS = 3


def run(*args: object):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("report")
    files = {name: root / f"{name}.tsv" for name in ("train", "valid", "test")}
    for seed, (name, path) in enumerate(files.items()):
        write_tiny_graph(path, seed=seed + 1, edges=400 if name == "train" else 41)
    r = run("import", files["train"], "--split", f"valid={files['valid']}", "--split", f"test={files['test']}",
            "-o", root / "data", "-p", "3", "--no-progress")
    assert r.exit_code == 0, r.output
    r = run("train", root / "data", "-o", root / "run", "--dim", "8", "--epochs", EPOCHS,
            "--set", "training.eval_every=1", "--set", "training.buffer_partitions=2", "--no-progress")
    assert r.exit_code == 0, r.output
    return root


class Tables(HTMLParser):
    """Every ``<table id=...>`` of a page as rows of cell texts; every ``<img>``'s src."""

    def __init__(self, page: str) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.images: list[str] = []
        self._table: str | None = None
        self._cell: list[str] | None = None
        self.feed(page)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "table":
            self._table = a.get("id") or f"table{len(self.tables)}"
            self.tables[self._table] = []
        elif tag == "tr" and self._table:
            self.tables[self._table].append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "img":
            self.images.append(a.get("src") or "")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._table and self._cell is not None:
            self.tables[self._table][-1].append("".join(self._cell))
            self._cell = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "stats.jsonl").read_text().splitlines()]


def as_dicts(rows: list[list[str]]) -> list[dict[str, str]]:
    return [dict(zip(rows[0], row)) for row in rows[1:]]


def num(cell: str) -> float:
    return float(cell.replace(",", ""))


@pytest.fixture(scope="module")
def page(trained) -> tuple[str, str]:
    r = run("report", trained / "run")
    assert r.exit_code == 0, r.output
    return (trained / "run" / "report.html").read_text(), r.stdout


def test_the_run_records_each_epoch_with_its_peak_memory_loads_and_commits(trained):
    ends = [r["epoch_end"] for r in records(trained / "run") if "epoch_end" in r]
    assert [e["epoch"] for e in ends] == list(range(EPOCHS))
    assert all(e["max_rss_bytes"] > 10 * 2**20 and e["commit_s"] > 0 and e["edges"] == 400 for e in ends)
    assert ends[0]["loads"] >= 3  # 3 partitions, a buffer of 2: each is loaded at least once


def test_it_renders_from_the_runs_files_alone_and_is_self_contained(trained, tmp_path):
    copy = tmp_path / "elsewhere"
    shutil.copytree(trained / "run", copy)
    away = trained / "data-away"
    (trained / "data").rename(away)  # the DATA recorded in config.json is gone
    try:
        r = run("report", copy, "-o", tmp_path / "r.html")
    finally:
        away.rename(trained / "data")
    assert r.exit_code == 0, r.output
    html = (tmp_path / "r.html").read_text()
    assert "DATA was not found" in html and str(trained / "data") in html
    assert 'src="http' not in html and "<link" not in html and "@import" not in html and "url(" not in html
    images = Tables(html).images
    assert len(images) >= 5 and all(src.startswith("data:image/png;base64,") for src in images)
    tables = Tables(html).tables
    counts = json.loads((copy / "config.json").read_text())["data"]["entity_counts"]
    assert tables["nodes"][1] == ["node", str(sum(counts))] + [str(c) for c in counts]
    assert [row[0] for row in tables["relations"][1:]] == ["r0", "r1", "r2"]
    assert len(tables["epochs"]) == EPOCHS + 1  # the training figures need no DATA


def test_every_number_in_the_epoch_table_and_summary_is_stats_jsonls(trained, page):
    html, stdout = page
    recs = records(trained / "run")
    buckets = [r for r in recs if "bucket_index" in r]
    ends = {r["epoch_end"]["epoch"]: r["epoch_end"] for r in recs if "epoch_end" in r}
    evals = {r["eval"]["epoch"]: r["eval"] for r in recs if "eval" in r}
    rows = as_dicts(Tables(html).tables["epochs"])
    assert [int(r["epoch"]) for r in rows] == list(range(1, EPOCHS + 1))
    for row in rows:
        e = int(row["epoch"])
        mine = [b for b in buckets if b["epoch"] == e - 1]
        edges = sum(b["edges"] for b in mine)
        assert int(num(row["edges"])) == edges == 400 and int(row["bucket visits"]) == len(mine)
        assert num(row["mean loss"]) == round(sum(b["loss"] * b["edges"] for b in mine) / edges, 4)
        assert num(row["training s"]) == round(sum(b["seconds"] for b in mine), 2)
        assert num(row["io wait s"]) == round(sum(b["io_wait_s"] for b in mine), 2)
        assert num(row["edges/s training"]) == round(edges / sum(b["seconds"] for b in mine))
        assert num(row["wall s"]) == round(ends[e - 1]["seconds"], 2)
        assert num(row["commit s"]) == round(ends[e - 1]["commit_s"], 2)
        assert int(row["partition loads"]) == ends[e - 1]["loads"]
        assert row["peak RSS"] == human(ends[e - 1]["max_rss_bytes"])
        assert num(row["valid MRR"]) == round(evals[e]["mrr"], 4)
    summary = dict(line.split(": ", 1) for line in stdout.splitlines())
    assert summary["epochs"] == f"{EPOCHS} trained, {EPOCHS * 400:,} edges"
    last = [b for b in buckets if b["epoch"] == EPOCHS - 1]
    assert summary["loss"].startswith(f"{sum(b['loss'] * b['edges'] for b in last) / 400:.4f} in epoch {EPOCHS}")
    wall = sum(end["seconds"] for end in ends.values())
    assert f"mean epoch {wall / EPOCHS:.2f} s wall" in summary["speed"]
    assert summary["time"].startswith(f"{wall:.1f} s = training {sum(b['seconds'] for b in buckets):.1f} s")
    assert summary["peak RSS"] == human(max(end["max_rss_bytes"] for end in ends.values()))
    assert summary["report"] == str(trained / "run" / "report.html")
    embedded = json.loads(html.split('id="bigembed-report">')[1].split("</script>")[0])
    for row in embedded["epochs"]:  # the unrounded figures (the table's tiny timings round to 0.00)
        mine, end = [b for b in buckets if b["epoch"] == row["epoch"] - 1], ends[row["epoch"] - 1]
        assert row["edges"] == sum(b["edges"] for b in mine) == 400
        assert row["mean_loss"] == pytest.approx(sum(b["loss"] * b["edges"] for b in mine) / 400, rel=1e-12)
        assert row["train_s"] == pytest.approx(sum(b["seconds"] for b in mine), rel=1e-12)
        assert row["io_wait_s"] == pytest.approx(sum(b["io_wait_s"] for b in mine), rel=1e-12)
        assert (row["wall_s"], row["commit_s"], row["loads"], row["max_rss_bytes"]) == (
            end["seconds"], end["commit_s"], end["loads"], end["max_rss_bytes"])


def test_validation_by_epoch_is_what_the_run_recorded(trained, page):
    html, stdout = page
    history = json.loads((trained / "run" / "evals.json").read_text())["history"]
    assert [h["epoch"] for h in history] == list(range(1, EPOCHS + 1))
    rows = as_dicts(Tables(html).tables["validation"])
    assert [(int(r["epoch"]), r["version"], num(r["MRR"]), num(r["Hits@10"])) for r in rows] == [
        (h["epoch"], f"v{h['version']}", round(h["mrr"], 4), round(h["hits@10"], 4)) for h in history]
    best = max(history, key=lambda h: h["mrr"])
    assert f"best validation: MRR {best['mrr']:.4f} at epoch {best['epoch']}" in stdout
    embedded = json.loads(html.split('id="bigembed-report">')[1].split("</script>")[0])
    assert [row["mrr"] for row in embedded["epochs"]] == [h["mrr"] for h in history]


def test_the_data_section_counts_relations_and_degrees_of_the_edge_files(trained, page, monkeypatch):
    html, _ = page
    triples = [line.split("\t") for line in (trained / "train.tsv").read_text().splitlines()]
    by_rel = Counter(rel for _, rel, _ in triples)
    rows = {r["relation"]: r for r in as_dicts(Tables(html).tables["relations"])}
    assert {name: int(rows[name]["train edges"]) for name in by_rel} == dict(by_rel)
    assert int(rows["all"]["valid edges"]) == 41
    degree = Counter(n for lhs, _, rhs in triples for n in (lhs, rhs))
    want = Counter(degree.values())
    monkeypatch.setattr(data_summary, "SLICE", 7)  # streamed in slices smaller than a bucket
    hist = data_summary.degree_histogram(read_data_manifest(trained / "data"))
    assert {d: int(c) for d, c in enumerate(hist) if c and d} == dict(want)
    assert int(hist[0]) == read_data_manifest(trained / "data").num_entities - len(degree)
    assert int((hist * np.arange(hist.size)).sum()) == 2 * len(triples)


def test_a_damaged_line_is_skipped_and_named(trained, tmp_path, page):
    copy = tmp_path / "run"
    shutil.copytree(trained / "run", copy)
    lines = (copy / "stats.jsonl").read_text().splitlines()
    lines.insert(3, '{"epoch": 0, "bucket_ind')  # what a torn write leaves
    (copy / "stats.jsonl").write_text("\n".join(lines) + '\n{"epoch": "one", "bucket_index": 2}\n')
    r = run("report", copy)
    assert r.exit_code == 0, r.output
    assert "stats.jsonl:4: not JSON" in r.stderr and f"stats.jsonl:{len(lines) + 1}: not a stats record" in r.stderr
    html = (copy / "report.html").read_text()
    assert "skipped damaged line" in html and f"{copy / 'stats.jsonl'}:4" in html
    assert Tables(html).tables["epochs"] == Tables(page[0]).tables["epochs"]  # nothing else changed


def test_a_run_without_epochs_says_so(trained, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(trained / "run", copy)
    (copy / "stats.jsonl").write_text((copy / "stats.jsonl").read_text().splitlines()[0] + "\n")  # the start
    r = run("report", copy)
    assert r.exit_code == 0, r.output
    assert "epochs: no epochs trained yet" in r.stdout
    html = (copy / "report.html").read_text()
    assert "no epochs trained yet" in html and "epochs" not in Tables(html).tables and "config" in Tables(html).tables
    (copy / "stats.jsonl").unlink()
    assert run("report", copy).exit_code == 0


def test_not_a_run_is_one_error_line(tmp_path):
    r = run("report", tmp_path)
    assert r.exit_code == 1 and r.stderr.startswith("error: ") and "config.json" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    r = run("report", tmp_path / "missing")
    assert r.exit_code == 1 and "no such RUN directory" in r.stderr


def test_without_matplotlib_it_renders_tables_and_the_hint(trained, tmp_path, monkeypatch):
    for name in ("matplotlib", "matplotlib.figure", "matplotlib.backends", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, name, None)  # importing it raises ImportError
    r = run("report", trained / "run", "-o", tmp_path / "r.html")
    assert r.exit_code == 0, r.output
    html = (tmp_path / "r.html").read_text()
    assert "pip install &#x27;bigembed[report]&#x27; adds plots" in html
    parsed = Tables(html)
    assert not parsed.images and len(parsed.tables["epochs"]) == EPOCHS + 1
