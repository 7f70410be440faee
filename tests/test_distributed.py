"""Several ranks, launched as users launch them (torchrun, 2 processes on 127.0.0.1): every
visit trained once an epoch, no partition in two ranks at once, the quality of one rank, a
killed rank stopping the other, resume across numbers of ranks, too many ranks refused."""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bigembed.checkpoint import epoch_progress, read_current, read_manifest
from bigembed.errors import CheckpointError

BIGEMBED = [sys.executable, "-m", "bigembed"]
SMALL = ["--dim", "32", "--set", "training.negatives=20"]


def torchrun(ranks: int) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(ranks),
            "-m", "bigembed"]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}


def run(cmd: list[str], timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=_env())


def train(ranks: int, data: Path, out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    launcher = torchrun(ranks) if ranks > 1 else BIGEMBED
    done = run([*launcher, "train", str(data), "-o", str(out), "--no-progress", *SMALL, *args])
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def stats(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "stats.jsonl").read_text().splitlines()]


def test_mrr(run_dir: Path, data: Path) -> float:
    done = run([*BIGEMBED, "eval", str(run_dir), str(data), "--json", "-", "--no-progress"])
    assert done.returncode == 0, done.stderr
    return float(json.loads(done.stdout)["mrr"])


test_mrr.__test__ = False  # type: ignore[attr-defined]  # a helper, not a test


@pytest.fixture(scope="module")
def graph(tmp_path_factory) -> dict[int, Path]:
    """A planted-community graph imported with 4 and with 2 partitions."""
    root = tmp_path_factory.mktemp("dist")
    gen = run([*BIGEMBED, "generate", "-o", str(root / "g"), "--nodes", "3000", "--edges", "40000"])
    assert gen.returncode == 0, gen.stderr
    out = {}
    for P in (4, 2):
        imp = run([*BIGEMBED, "import", str(root / "g" / "train.tsv"), "-o", str(root / f"p{P}"), "-p", str(P),
                   "--split", f"valid={root / 'g' / 'valid.tsv'}", "--split", f"test={root / 'g' / 'test.tsv'}"])
        assert imp.returncode == 0, imp.stderr
        out[P] = root / f"p{P}"
    return out


def _visits_per_epoch(records: list[dict]) -> dict[int, collections.Counter]:
    out: dict[int, collections.Counter] = collections.defaultdict(collections.Counter)
    for r in records:
        if "bucket_index" in r:
            out[r["epoch"]][r["bucket_index"]] += 1
    return out


def _check_no_partition_in_two_ranks(records: list[dict]) -> None:
    """Replay the lock's claims and releases in its own order (and check its clock agrees):
    a partition is claimed only when free or already the claimer's."""
    events = sorted((r["job"], r["seq"], r["at"], r["lock"], r["rank"], r["partitions"])
                    for r in records if "lock" in r)
    assert events
    holder: dict[int, int] = {}
    last, job = 0.0, None
    for this_job, _, at, what, rank, partitions in events:
        if this_job != job:  # another job (a run resumed): every partition was released at its end
            assert not holder, holder
            job, last = this_job, 0.0
        assert at >= last - 1e-3  # the lock's times run with its order
        last = at
        for p in partitions:
            if what == "claim":
                assert holder.get(p, rank) == rank, f"partition {p} claimed by rank {rank}, held by {holder[p]}"
                holder[p] = rank
            else:
                assert holder.pop(p, None) == rank


def test_two_ranks_train_every_visit_once_and_learn_as_well_as_one(graph, tmp_path):
    data = graph[4]
    two, one = tmp_path / "two", tmp_path / "one"
    # one worker thread in every process: two Hogwild threads in one process score about 0.02
    # lower on this graph than one (0.461-0.471 against 0.488 after 8 epochs), whatever the ranks
    out = train(2, data, two, "--epochs", "6", "--workers", "1")
    train(1, data, one, "--epochs", "6", "--workers", "1")
    records = stats(two)
    per_epoch = _visits_per_epoch(records)
    assert sorted(per_epoch) == list(range(6))
    for counter in per_epoch.values():
        assert sorted(counter) == list(range(16)) and set(counter.values()) == {1}
    assert {r["rank"] for r in records if "bucket_index" in r} == {0, 1}  # both ranks trained
    _check_no_partition_in_two_ranks(records)
    assert "2 ranks" in out.stdout + out.stderr
    m2, m1 = test_mrr(two, data), test_mrr(one, data)
    assert m1 > 0.2  # the model learns at all
    assert abs(m2 - m1) < 0.02, (m2, m1)


def test_commit_rounds_mid_epoch_and_resume_with_other_numbers_of_ranks(graph, tmp_path):
    data, run_dir = graph[4], tmp_path / "run"
    # a commit round after every visit: positions with visits done out of order
    train(2, data, run_dir, "--epochs", "1", "--set", "checkpoint.interval_seconds=0")
    manifests = [json.loads(p.read_text()) for p in (run_dir / "checkpoints").glob("v*/manifest.json")]
    assert len(manifests) >= 1
    train(1, data, run_dir, "--epochs", "2")
    train(2, data, run_dir, "--epochs", "3")
    per_epoch = _visits_per_epoch(stats(run_dir))
    for epoch in range(3):
        assert sorted(per_epoch[epoch]) == list(range(16)) and set(per_epoch[epoch].values()) == {1}, epoch
    manifest = read_manifest(run_dir, read_current(run_dir))
    assert manifest.position.as_tuple() == (3, 0, 0)
    _check_no_partition_in_two_ranks(stats(run_dir))


def test_a_killed_rank_stops_the_other_and_the_same_command_resumes(graph, tmp_path):
    data, run_dir = graph[4], tmp_path / "run"
    cmd = [*torchrun(2), "train", str(data), "-o", str(run_dir), "--no-progress", *SMALL, "--epochs", "12",
           "--set", "checkpoint.interval_seconds=0", "--set", "distributed.dead_after_seconds=5"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env())
    try:
        _kill_rank_1_when_training(run_dir, proc)
        killed = time.monotonic()
        output, _ = proc.communicate(timeout=60)
        assert time.monotonic() - killed < 30
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    assert "error: rank 1 stopped responding" in output, output
    current = read_current(run_dir)
    assert current is not None
    resumed_from = read_manifest(run_dir, current)
    before = len(stats(run_dir))
    again = run(cmd)  # the same command
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"resuming {run_dir} from v{current}" in again.stdout + again.stderr
    manifest = read_manifest(run_dir, read_current(run_dir))
    assert manifest.position.as_tuple() == (12, 0, 0)
    # the rerun trained exactly what the version it resumed from had not
    pos = resumed_from.position
    first_epoch = collections.Counter(r["bucket_index"] for r in stats(run_dir)[before:]
                                      if r.get("epoch") == pos.epoch and "bucket_index" in r)
    done_before = set(range(pos.bucket)) | set(resumed_from.extra.get("visits_done", []))
    assert set(first_epoch) == set(range(16)) - done_before and set(first_epoch.values()) == {1}


def _kill_rank_1_when_training(run_dir: Path, proc: subprocess.Popen) -> None:
    """Wait until rank 1 has trained a few buckets, then SIGKILL it."""
    pid, deadline = None, time.monotonic() + 120
    while time.monotonic() < deadline:
        if (run_dir / "stats.jsonl").exists():
            records = stats(run_dir)
            starts = [r["start"] for r in records if "start" in r and r["start"].get("rank") == 1]
            if starts and sum("bucket_index" in r and r["rank"] == 1 for r in records) >= 3:
                pid = starts[-1]["pid"]
                break
        assert proc.poll() is None, proc.communicate()[0]
        time.sleep(0.05)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)


def test_torchrun_restarts_the_job_after_a_kill_and_it_resumes(graph, tmp_path):
    data, run_dir = graph[4], tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--max-restarts", "1", "--nproc-per-node",
           "2", "-m", "bigembed", "train", str(data), "-o", str(run_dir), "--no-progress", *SMALL, "--epochs", "8",
           "--set", "checkpoint.interval_seconds=0", "--set", "distributed.dead_after_seconds=5"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env())
    try:
        _kill_rank_1_when_training(run_dir, proc)
        output, _ = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, output
    assert f"resuming {run_dir} from v" in output
    assert read_manifest(run_dir, read_current(run_dir)).position.as_tuple() == (8, 0, 0)


def test_more_ranks_than_the_partitions_allow_are_refused(graph, tmp_path):
    started = time.monotonic()
    done = run([*torchrun(2), "train", str(graph[2]), "-o", str(tmp_path / "run"), "--no-progress", *SMALL])
    assert done.returncode != 0
    assert "at most 1 rank(s) can train at once" in done.stdout + done.stderr
    assert time.monotonic() - started < 90


def test_one_process_resumes_a_version_with_visits_done_out_of_order(graph, tmp_path):
    """A version several ranks committed mid-epoch names later visits already trained (and
    one begun); a single process resumed from it trains exactly the others."""
    data, run_dir = graph[4], tmp_path / "run"
    train(1, data, run_dir, "--epochs", "1")
    current = read_current(run_dir)
    manifest = json.loads((run_dir / "checkpoints" / f"v{current}" / "manifest.json").read_text())
    manifest.update(version=current + 1, parent=current, position={"epoch": 1, "bucket": 2, "slab": 0},
                    visits_done=[5, 7], epochs_done=1)
    staged = run_dir / "checkpoints" / f"v{current + 1}"
    staged.mkdir()
    (staged / "manifest.json").write_text(json.dumps(manifest))
    (run_dir / "CURRENT").write_text(f"v{current + 1}\n")
    before = len(stats(run_dir))
    train(1, data, run_dir, "--epochs", "2")
    trained = collections.Counter(r["bucket_index"] for r in stats(run_dir)[before:] if r.get("epoch") == 1)
    assert set(trained) == set(range(2, 16)) - {5, 7} and set(trained.values()) == {1}
    # a damaged list is refused in one line naming the manifest
    manifest.update(version=current + 3, parent=current + 2, visits_done=[1, 99],
                    position={"epoch": 1, "bucket": 2, "slab": 0})
    bad = run_dir / "checkpoints" / f"v{current + 3}"
    bad.mkdir()
    (bad / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match=r"v\d+/manifest.json: impossible visits_done"):
        epoch_progress(run_dir, read_manifest(run_dir, current + 3), 16)


def test_a_rank_that_cannot_reach_the_job_gives_up_in_bounded_time(tmp_path, graph):
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**_env(), "WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(port)}
    started = time.monotonic()
    done = subprocess.run([*BIGEMBED, "train", str(graph[4]), "-o", str(tmp_path / "run"), "--no-progress",
                           "--set", "distributed.connect_timeout_seconds=3"], capture_output=True, text=True,
                          timeout=120, env=env)
    assert done.returncode == 1
    assert time.monotonic() - started < 60
    last = done.stderr.strip().splitlines()[-1]  # after torch's own log lines of the failed connection
    assert last.startswith(f"error: rank 1: could not join the job at 127.0.0.1:{port} within 3 s"), last
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "run").exists()  # nothing was written
