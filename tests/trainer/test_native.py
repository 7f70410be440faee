"""The C kernel for the ranking loss's sparse gradients: same numbers as the dense kernel, built
once into its cache, and training goes on without it when it cannot be built."""

import ctypes
import hashlib
import json
import logging
import stat
from pathlib import Path

import pytest
import torch

from bigembed.trainer import fused, kernels, native
from bigembed.trainer.step import train_batch
from tests.trainer.test_fused import _setup


def _lib():
    lib = native.library()
    if lib is None:
        pytest.skip("no C compiler on this machine: the dense kernel's own tests cover training")
    return lib


def _wide_inputs(n, c, U, d, spread, seed):
    """Rows in the wide layout whose positives beat ``spread``-scaled negatives, so that the
    share of active hinges goes from most (spread 1) to a few percent (spread small)."""
    gen = torch.Generator().manual_seed(seed)
    Q = torch.randn(n * c, d, generator=gen)
    R = Q + 0.5 * torch.randn(n * c, d, generator=gen)
    Nr, M = spread * torch.randn(n, U, d, generator=gen), spread * torch.randn(n, U, d, generator=gen)
    W = torch.cat([torch.cat([R.view(n, c, d), Nr], 1).view(-1, d), Q, M.view(-1, d)]).contiguous()
    return W, torch.rand(n * c, generator=gen) + 0.5


@pytest.mark.parametrize("spread", [0.05, 0.4, 3.0])
def test_the_native_kernel_gives_the_dense_kernels_loss_and_gradients(spread):
    lib = _lib()
    n, c, U, d, margin = 4, 6, 5, 16, 3.0
    W, w = _wide_inputs(n, c, U, d, spread, seed=int(spread * 10))
    total, dW = kernels.wide_score_gradients(kernels.LOSS_RANKING, margin, W.clone(), w, c, U)
    S1, Sl = kernels.fused_wide_scores(W, c, U, n * c)
    got, got_dW, active = native.wide_ranking(lib, margin, W, S1, Sl, w, c, U)
    hinges = n * c * (2 * (c + U) - 2)
    assert 0 < active <= hinges
    assert float(got) == pytest.approx(float(total), rel=1e-5)
    assert torch.allclose(got_dW, dW, atol=1e-4, rtol=1e-5)
    if spread < 0.1:  # positives far ahead: few hinges active, and most rows get no gradient
        assert active < 0.2 * hinges and int((got_dW.abs().sum(1) == 0).sum()) > 0


def test_the_native_kernel_counts_active_hinges_and_reports_nan():
    lib = _lib()
    n, c, U, d = 2, 3, 2, 4
    W = torch.zeros(n * (c + 2 * U) + n * c, d)
    S1, Sl = torch.zeros(n, c, c + U), torch.zeros(n, c, U)  # every score 0: each hinge is the margin
    total, _, active = native.wide_ranking(lib, 0.5, W, S1, Sl, torch.ones(n * c), c, U)
    assert active == n * c * (2 * (c + U) - 2) and float(total) == pytest.approx(0.5 * active)
    S1[1, 2, 0] = float("nan")
    total, _, _ = native.wide_ranking(lib, 0.5, W, S1, Sl, torch.ones(n * c), c, U)
    assert torch.isnan(total)


@pytest.mark.parametrize("poison", ["nan score", "inf score", "nan row", "inf row"])
def test_both_kernels_give_a_non_finite_loss_for_a_non_finite_input(poison):
    """The contract the trainer relies on: whatever the kernel, a NaN or infinite score or row
    makes the batch's loss non-finite, so training stops at the end of the slab, names the
    bucket and commits nothing (the gradients of such a batch are never committed, and the two
    kernels need not agree on them)."""
    lib = _lib()
    n, c, U, d, margin = 3, 4, 5, 8, 0.5
    W, w = _wide_inputs(n, c, U, d, 0.4, seed=3)
    if poison.endswith("row"):
        W[n * (c + U) + 2, 1] = float("nan") if poison.startswith("nan") else float("inf")  # a query's row
    S1, Sl = kernels.fused_wide_scores(W, c, U, n * c)
    if poison == "nan score":
        S1[1, 2, 3] = float("nan")
    elif poison == "inf score":
        Sl[0, 1, 2] = float("inf")
    dense_total, _ = kernels.wide_score_gradients(kernels.LOSS_RANKING, margin, W.clone(), w, c, U) \
        if poison.endswith("row") else (None, None)
    native_total, _, _ = native.wide_ranking(lib, margin, W, S1, Sl, w, c, U)
    assert not torch.isfinite(native_total)
    if dense_total is not None:
        assert not torch.isfinite(dense_total)


def test_the_native_kernel_refuses_shapes_and_dtypes_it_was_not_built_for():
    lib = _lib()
    n, c, U, d = 2, 3, 2, 4
    W = torch.zeros(n * (c + 2 * U) + n * c, d)
    S1, Sl, w = torch.zeros(n, c, c + U), torch.zeros(n, c, U), torch.ones(n * c)
    with pytest.raises(ValueError, match="wide layout"):
        native.wide_ranking(lib, 0.5, W[:-1], S1, Sl, w, c, U)
    with pytest.raises(ValueError, match="contiguous float32"):
        native.wide_ranking(lib, 0.5, W.double(), S1, Sl, w, c, U)
    with pytest.raises(ValueError, match="contiguous float32"):
        native.wide_ranking(lib, 0.5, W, S1.transpose(1, 2).contiguous().transpose(1, 2), Sl, w, c, U)


def test_the_library_is_built_once_into_its_cache(tmp_path, monkeypatch):
    _lib()
    monkeypatch.setenv("BIGEMBED_CACHE_DIR", str(tmp_path / "cache"))
    first = native.library()
    assert first is not None and first is native.library()
    built = sorted((tmp_path / "cache").iterdir())
    # the library and the record of its sha256; no temporary file left beside them
    assert [p.suffix for p in built] == [".json", ".so"] and built[0].stem == built[1].stem
    assert json.loads(built[0].read_text())["sha256"] == hashlib.sha256(built[1].read_bytes()).hexdigest()
    assert not built[1].stat().st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def _loads(monkeypatch) -> list[tuple[str, str]]:
    """Record (path, sha256 of its bytes) of each library the native module loads."""
    loaded: list[tuple[str, str]] = []
    real = ctypes.CDLL

    def load(path: str) -> ctypes.CDLL:
        loaded.append((path, hashlib.sha256(Path(path).read_bytes()).hexdigest()))
        return real(path)

    monkeypatch.setattr(native.ctypes, "CDLL", load)
    monkeypatch.setattr(native, "_loaded", {})
    return loaded


def _cached_build(cache: Path) -> tuple[Path, str]:
    """Build the library into ``cache`` as ``library()`` would, without loading it; its path and
    recorded sha256."""
    cc = native._compiler()
    assert cc is not None
    path = cache / f"native-{native._build_key(cc)}.so"
    return path, native._build(cc, path)


def test_a_tampered_cached_library_is_rebuilt_not_loaded(tmp_path, monkeypatch, caplog):
    _lib()
    monkeypatch.setenv("BIGEMBED_CACHE_DIR", str(tmp_path / "cache"))
    path, good = _cached_build(tmp_path / "cache")
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    tampered = hashlib.sha256(bytes(data)).hexdigest()
    loaded = _loads(monkeypatch)
    with caplog.at_level(logging.WARNING, logger="bigembed.trainer.native"):
        lib = native.library()
    assert lib is not None and lib.bigembed_native_abi() == native.ABI
    assert loaded == [(str(path), good)] and good != tampered
    assert "differs from the" in caplog.text and "rebuilding" in caplog.text


@pytest.mark.parametrize("what", ["library", "record"])
def test_a_group_writable_cached_library_is_rebuilt_not_loaded(tmp_path, monkeypatch, caplog, what):
    _lib()
    monkeypatch.setenv("BIGEMBED_CACHE_DIR", str(tmp_path / "cache"))
    path, good = _cached_build(tmp_path / "cache")
    writable = path if what == "library" else path.with_suffix(".json")
    writable.chmod(0o775)
    loaded = _loads(monkeypatch)
    with caplog.at_level(logging.WARNING, logger="bigembed.trainer.native"):
        assert native.library() is not None
    assert "writable by its group" in caplog.text and "rebuilding" in caplog.text
    assert loaded == [(str(path), good)]
    assert not (path.stat().st_mode | path.with_suffix(".json").stat().st_mode) & stat.S_IWGRP  # fresh files


def test_a_cache_folder_others_can_write_is_not_used(tmp_path, monkeypatch, caplog):
    _lib()
    cache = tmp_path / "cache"
    cache.mkdir()
    cache.chmod(0o777)
    monkeypatch.setenv("BIGEMBED_CACHE_DIR", str(cache))
    loaded = _loads(monkeypatch)
    with caplog.at_level(logging.WARNING, logger="bigembed.trainer.native"):
        lib = native.library()
    assert lib is not None and lib.bigembed_native_abi() == native.ABI
    assert "writable by its group or by others" in caplog.text and "private temporary folder" in caplog.text
    assert len(loaded) == 1 and not loaded[0][0].startswith(str(cache))
    assert list(cache.iterdir()) == [] and not Path(loaded[0][0]).exists()  # nothing kept anywhere


def test_without_a_working_compiler_or_when_turned_off_training_uses_the_dense_step(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("BIGEMBED_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("CC", "false")  # a "compiler" that always fails
    with caplog.at_level(logging.WARNING, logger="bigembed.trainer.native"):
        assert native.library() is None
    assert "could not compile" in caplog.text
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())
    monkeypatch.delenv("CC")
    monkeypatch.setenv("BIGEMBED_NATIVE", "0")
    assert native.library() is None


def _count_kernels(monkeypatch) -> tuple[list, list]:
    """Count the calls of the two ranking kernels: (sparse C kernel, dense products)."""
    calls, dense = [], []
    real, real_dense = native.wide_ranking, fused.fused_wide_score_gradients
    monkeypatch.setattr(native, "wide_ranking", lambda *a: calls.append(1) or real(*a))
    monkeypatch.setattr(fused, "fused_wide_score_gradients", lambda *a: dense.append(1) or real_dense(*a))
    return calls, dense


def _fresh_ranking_step(mode="auto"):
    """A function training one ranking-loss batch on fresh embeddings (most hinges active)."""
    config, model, lhs, rhs, relations = _setup({
        "model.operator": "none", "model.loss": "ranking", "model.margin": 0.5, "training.chunk_size": 3,
        "training.negatives": 4, "training.ranking_gradients": mode})
    lhs_idx, rhs_idx = torch.tensor([0, 2, 4, 6, 1, 2]), torch.tensor([5, 4, 3, 2, 1, 5])
    gen = torch.Generator().manual_seed(1)
    return lambda: train_batch(model, lhs, rhs, relations, 0, lhs_idx, rhs_idx, None, config.training, gen)


def test_a_batch_with_many_active_hinges_sends_the_next_ones_to_the_dense_products(monkeypatch):
    """Fresh embeddings: most hinges are active, the sparse kernel is slower there, so after one
    such batch the worker takes the dense products for ``DENSE_SPELL`` batches, then tries again;
    and a new run over a slab starts from the sparse kernel."""
    _lib()
    calls, dense = _count_kernels(monkeypatch)
    step = _fresh_ranking_step()
    fused.reset_kernel_choice()
    for _ in range(fused.DENSE_SPELL + 2):
        step()
    assert len(calls) == 2 and len(dense) == fused.DENSE_SPELL
    fused.reset_kernel_choice()
    step()
    assert len(calls) == 3


@pytest.mark.parametrize("mode, sparse_calls, dense_calls", [("sparse", 6, 0), ("dense", 0, 6)])
def test_the_ranking_kernel_can_be_pinned(mode, sparse_calls, dense_calls, monkeypatch):
    """``training.ranking_gradients = sparse`` keeps the C kernel however many hinges are
    active; ``dense`` never calls it."""
    _lib()
    calls, dense = _count_kernels(monkeypatch)
    step = _fresh_ranking_step(mode)
    fused.reset_kernel_choice()
    for _ in range(6):  # auto would leave the C kernel after the first of these
        step()
    fused.reset_kernel_choice()  # the next test on this thread chooses as usual
    assert (len(calls), len(dense)) == (sparse_calls, dense_calls)


def test_an_unknown_ranking_gradients_setting_is_refused_with_the_choices():
    from bigembed.config import load_config
    from bigembed.errors import ConfigError

    with pytest.raises(ConfigError, match="auto, sparse, dense"):
        load_config(overrides={"training.ranking_gradients": "fast"})


@pytest.mark.parametrize("max_norm", [0.0, 1.5])
def test_native_row_adagrad_steps_as_the_torchscript_kernel(max_norm, monkeypatch):
    """Repeated rows (summed first), rows named once, and rows left alone; with and without
    max_norm: the C kernel and the TorchScript one end with the same table and accumulators."""
    from bigembed.trainer.adagrad import row_adagrad_, row_slots

    lib = _lib()
    gen = torch.Generator().manual_seed(9)
    table, state = torch.randn(60, 8, generator=gen), torch.rand(60, generator=gen)
    index = torch.cat([torch.randperm(60, generator=gen)[:30], torch.tensor([3, 3, 17, 40, 3])])
    grad = torch.randn(index.shape[0], 8, generator=gen) * 2
    t1, s1, t2, s2 = table.clone(), state.clone(), table.clone(), state.clone()
    native.row_adagrad(lib, t1, s1, row_slots(60), index, grad.clone(), 0.3, max_norm, 1e-10)
    kernels.row_adagrad(t2, s2, row_slots(60), [index], [grad.clone()], 0.3, max_norm)
    assert torch.allclose(t1, t2, atol=1e-6) and torch.allclose(s1, s2, atol=1e-6)
    untouched = torch.ones(60, dtype=torch.bool)
    untouched[index] = False
    assert torch.equal(t1[untouched], table[untouched]) and torch.equal(s1[untouched], state[untouched])
    if max_norm:
        assert float(torch.linalg.vector_norm(t1[index], dim=1).max()) <= max_norm * (1 + 1e-6)
    # the public entry point takes the C kernel here, and the TorchScript one when it is turned off
    t3, s3 = table.clone(), state.clone()
    row_adagrad_(t3, s3, [index[:10], index[10:]], [grad[:10], grad[10:]], 0.3, max_norm)
    monkeypatch.setenv("BIGEMBED_NATIVE", "0")
    t4, s4 = table.clone(), state.clone()
    row_adagrad_(t4, s4, [index[:10], index[10:]], [grad[:10], grad[10:]], 0.3, max_norm)
    assert torch.allclose(t3, t4, atol=1e-6) and torch.allclose(s3, s4, atol=1e-6)


def test_native_gather_and_adagrad_refuse_ids_outside_the_table():
    """C does not check bounds, so the wrappers do: an id past the end is an IndexError that
    names the range, not a write into someone else's memory."""
    from bigembed.trainer.adagrad import row_slots

    lib = _lib()
    table, state = torch.randn(10, 4), torch.rand(10)
    out = torch.empty(3, 4)
    native.gather(lib, out, table, torch.tensor([9, 0, 4]))
    assert torch.equal(out, table[[9, 0, 4]])
    for bad in (torch.tensor([1, 10, 2]), torch.tensor([-1, 0, 2])):
        with pytest.raises(IndexError, match=r"\[0, 10\)"):
            native.gather(lib, out, table, bad)
        before = table.clone()
        with pytest.raises(IndexError, match=r"\[0, 10\)"):
            native.row_adagrad(lib, table, state, row_slots(10), bad, torch.randn(3, 4), 0.1, 0.0, 1e-10)
        assert torch.equal(table, before)
    with pytest.raises(ValueError, match="float32"):
        native.gather(lib, out, table.double(), torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match="shapes"):
        native.row_adagrad(lib, table, state, row_slots(10), torch.tensor([1, 2]), torch.randn(3, 4), 0.1, 0.0,
                           1e-10)


def test_the_kernels_are_looked_up_once_per_training_not_per_batch(tmp_path, monkeypatch):
    """The trainer resolves the C kernels when it starts and passes them down: the batches of
    a run (here about 80) must not each look the library up (reading the environment)."""
    from click.testing import CliRunner

    from bigembed.cli.main import cli
    from tests.conftest import write_tiny_graph

    _lib()
    write_tiny_graph(tmp_path / "e.tsv", edges=400, nodes=40)
    runner = CliRunner()
    assert runner.invoke(cli, ["import", str(tmp_path / "e.tsv"), "-o", str(tmp_path / "d"), "-p", "1",
                               "--no-progress"]).exit_code == 0
    lookups, batches = [], []
    real_load, real_library, real_gather = native.cbuild.load_explained, native.library, native.gather
    monkeypatch.setattr(native.cbuild, "load_explained", lambda *a: lookups.append(1) or real_load(*a))
    monkeypatch.setattr(native, "library", lambda: lookups.append(1) or real_library())
    monkeypatch.setattr(native, "gather", lambda *a: batches.append(1) or real_gather(*a))  # 3 a batch
    r = runner.invoke(cli, ["train", str(tmp_path / "d"), "-o", str(tmp_path / "run"), "--no-progress",
                            "--epochs", "2", "--dim", "8", "--workers", "1",
                            "--set", "model.loss=ranking", "--set", "model.operator=none",
                            "--set", "model.reciprocal=false", "--set", "model.regularizer=none",
                            "--set", "training.batch_size=10",
                            "--set", "training.chunk_size=5", "--set", "training.negatives=5",
                            "--set", "training.batch_negatives=true"])
    assert r.exit_code == 0, r.output
    assert len(batches) >= 3 * 70 and len(lookups) == 1


def _train_tiny(tmp_path, *settings, env=None):
    """Import a tiny graph and train it 1 epoch from the CLI (``env``: extra environment)."""
    from click.testing import CliRunner

    from bigembed.cli.main import cli
    from tests.conftest import write_tiny_graph

    write_tiny_graph(tmp_path / "e.tsv", edges=300, nodes=40)
    runner = CliRunner()
    if not (tmp_path / "d").exists():
        assert runner.invoke(cli, ["import", str(tmp_path / "e.tsv"), "-o", str(tmp_path / "d"), "-p", "1",
                                   "--no-progress"]).exit_code == 0
    args = ["train", str(tmp_path / "d"), "-o", str(tmp_path / "run"), "--no-progress", "--epochs", "1",
            "--dim", "8", "--set", "model.loss=ranking", "--set", "model.operator=none",
            "--set", "model.reciprocal=false", "--set", "model.regularizer=none",
            "--set", "training.batch_negatives=true", "--set", "training.chunk_size=10"]
    for s in settings:
        args += ["--set", s]
    return runner.invoke(cli, args, env=env)


def _start_record(run):
    records = [json.loads(line) for line in (run / "stats.jsonl").read_text().splitlines()]
    starts = [r["start"] for r in records if "start" in r]
    assert len(starts) == 1
    return starts[0]


def test_the_kernel_choice_is_said_recorded_and_shown_by_info(tmp_path):
    from click.testing import CliRunner

    from bigembed.cli.main import cli

    _lib()
    r = _train_tiny(tmp_path)
    assert r.exit_code == 0, r.output
    assert "native kernels: " in r.output
    start = _start_record(tmp_path / "run")
    assert start["kernels"] == "native" and start["ranking_gradients"] == "auto"
    assert start["kernels_why"].startswith("native kernels: ")
    info = CliRunner().invoke(cli, ["info", str(tmp_path / "run")])
    assert info.exit_code == 0 and "native, ranking gradients auto" in info.output


def test_torchscript_kernels_never_call_the_c_library(tmp_path, monkeypatch):
    _lib()
    calls = []
    for name in ("gather", "row_adagrad", "wide_ranking"):
        real = getattr(native, name)
        monkeypatch.setattr(native, name, lambda *a, real=real: calls.append(1) or real(*a))
    r = _train_tiny(tmp_path, "training.kernels=torchscript")
    assert r.exit_code == 0, r.output
    assert not calls
    assert "TorchScript kernels (training.kernels = torchscript" in r.output
    assert _start_record(tmp_path / "run")["kernels"] == "torchscript"


def test_without_a_compiler_auto_says_why_and_native_is_a_one_line_error(tmp_path, monkeypatch):
    env = {"CC": "no-such-compiler-here", "BIGEMBED_CACHE_DIR": str(tmp_path / "cache")}
    r = _train_tiny(tmp_path, "training.kernels=native", env=env)
    assert r.exit_code != 0
    line = r.output.strip()
    assert "\n" not in line and "training.kernels = native: no C compiler found" in line
    assert not (tmp_path / "run" / "CURRENT").exists()  # refused before anything was committed
    r = _train_tiny(tmp_path, env=env)
    assert r.exit_code == 0, r.output
    assert "TorchScript kernels: no C compiler found" in r.output
    assert _start_record(tmp_path / "run")["kernels"] == "torchscript"
