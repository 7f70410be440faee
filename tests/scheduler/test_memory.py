"""Choosing partitions and buffer size for a memory budget."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from bigembed.cli.main import cli
from bigembed.errors import BigembedError
from bigembed.scheduler.memory import (
    FIXED_OVERHEAD,
    SLOT_BYTES,
    MemoryModel,
    choose_buffer,
    parse_bytes,
    partitions_for,
)
from tests.conftest import write_tiny_graph

MiB = 1 << 20


def test_parse_bytes_reads_the_usual_spellings():
    assert parse_bytes("8G") == 8 << 30
    assert parse_bytes("512M") == 512 << 20
    assert parse_bytes("1.5GiB") == 3 << 29
    assert parse_bytes("1000") == 1000
    with pytest.raises(BigembedError, match="--memory: expected a size such as 8G"):
        parse_bytes("lots")


def test_the_estimate_is_rows_times_row_bytes_plus_edges_plus_overhead():
    m = MemoryModel(dim=128)
    assert m.row_bytes == 4 * 129
    assert m.estimate(1000, 3, bucket_edges=0) == 3 * 1000 * 516 + 2 * 1000 * SLOT_BYTES + FIXED_OVERHEAD
    # each Hogwild worker keeps int32 row slots for Adagrad's repeated rows
    assert MemoryModel(dim=128, workers=8).estimate(1000, 3, 0) - m.estimate(1000, 3, 0) == 6 * 1000 * SLOT_BYTES
    assert MemoryModel(dim=128, per_coordinate=True).row_bytes == 4 * 256
    assert MemoryModel(dim=128, all_negatives=True).estimate(1000, 2, 0) > m.estimate(1000, 2, 0)
    half = MemoryModel(dim=128, itemsize=2)  # training.storage_dtype float16/bfloat16: Adagrad stays float32
    assert half.row_bytes == 2 * 128 + 4
    assert MemoryModel(dim=128, per_coordinate=True, itemsize=2).row_bytes == 2 * 128 + 4 * 128
    # all negatives with half storage: one more float32 temporary, the table's widened copy
    assert (MemoryModel(dim=128, all_negatives=True, itemsize=2).estimate(1000, 2, 0) - half.estimate(1000, 2, 0)
            == 4 * 1000 * 4 * 128)


def test_half_precision_rows_let_a_budget_hold_more_partitions():
    counts = [1_000_000] * 8
    full, half = MemoryModel(dim=100), MemoryModel(dim=100, itemsize=2)
    budget = FIXED_OVERHEAD + 3 * 1_000_000 * full.row_bytes + 1_000_000 * full.row_bytes // 2
    assert choose_buffer(full, counts, 0, budget).c == 3
    assert choose_buffer(half, counts, 0, budget).c == 6  # rows of 204 bytes against 404


def test_choose_buffer_takes_the_largest_buffer_that_fits():
    m = MemoryModel(dim=100)
    counts = [1_000_000] * 8  # 404 MB a partition
    part = 1_000_000 * m.row_bytes
    budget = FIXED_OVERHEAD + 3 * part + part // 2
    choice = choose_buffer(m, counts, 0, budget)
    assert choice.c == 3 and choice.estimate <= budget
    assert "holding 3 of 8 partitions" in choice.message
    assert choose_buffer(m, counts, 0, FIXED_OVERHEAD + 9 * part).c == 8
    with pytest.raises(BigembedError, match=r"two partitions of 1000000 rows need about .*; import again with -p"):
        choose_buffer(m, counts, 0, FIXED_OVERHEAD + part)


def test_partitions_for_picks_the_fewest_that_fit():
    m = MemoryModel(dim=100)
    nodes = 8_000_000
    budget = FIXED_OVERHEAD + 2 * (nodes // 8) * m.row_bytes + 64 * MiB
    P = partitions_for(m, nodes, budget, num_edges=0)
    assert P == 8
    assert m.estimate(-(-nodes // P), 2, 0) <= budget < m.estimate(-(-nodes // (P - 1)), 2, 0)
    assert partitions_for(m, nodes, FIXED_OVERHEAD // 2) is None


def test_cli_import_and_train_with_a_memory_budget(tmp_path):
    write_tiny_graph(tmp_path / "g.tsv", nodes=3000, edges=6000)
    runner = CliRunner()
    r = runner.invoke(cli, ["import", str(tmp_path / "g.tsv"), "-o", str(tmp_path / "d"), "-p", "2",
                            "--memory", "1G", "--no-progress"])
    assert r.exit_code == 2 and "give --memory or -p/--partitions, not both" in r.output
    # 3000 nodes at dim 20000 are 240 MB: a budget of FIXED_OVERHEAD + 150 MB forces several partitions
    budget = f"{(FIXED_OVERHEAD >> 20) + 150}M"
    r = runner.invoke(cli, ["import", str(tmp_path / "g.tsv"), "-o", str(tmp_path / "d"), "--memory", budget,
                            "--dim", "20000", "--no-progress"])
    assert r.exit_code == 0, r.output
    P = json.loads((tmp_path / "d" / "manifest.json").read_text())["entities"]["node"]["num_partitions"]
    assert P > 2 and f"at dim 20000 (float32): {P} partitions" in r.output
    # half-precision rows are half the bytes: the same budget needs fewer partitions
    r = runner.invoke(cli, ["import", str(tmp_path / "g.tsv"), "-o", str(tmp_path / "d16"), "--memory", budget,
                            "--dim", "20000", "--storage-dtype", "bfloat16", "--no-progress"])
    assert r.exit_code == 0, r.output
    P16 = json.loads((tmp_path / "d16" / "manifest.json").read_text())["entities"]["node"]["num_partitions"]
    assert P16 < P and f"at dim 20000 (bfloat16): {P16} partition{'s' if P16 > 1 else ''}" in r.output
    r = runner.invoke(cli, ["train", str(tmp_path / "d"), "-o", str(tmp_path / "run"), "--dim", "8", "--epochs", "1",
                            "--memory", budget, "--no-progress"])
    assert r.exit_code == 0, r.output
    saved = json.loads((tmp_path / "run" / "config.json").read_text())["config"]["training"]
    assert saved["buffer_partitions"] == P  # at dim 8 everything fits
    r = runner.invoke(cli, ["train", str(tmp_path / "d"), "-o", str(tmp_path / "run2"), "--dim", "20000",
                            "--epochs", "0", "--memory", f"{(FIXED_OVERHEAD >> 20) + 60}M", "--no-progress"])
    assert r.exit_code == 1 and "import again with -p" in r.output
