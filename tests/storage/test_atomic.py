import errno

import pytest

from bigembed.errors import BigembedError
from bigembed.storage.atomic import atomic_output_dir


def test_output_appears_only_when_complete(tmp_path):
    out = tmp_path / "out"
    with atomic_output_dir(out, "export") as tmp:
        (tmp / "a.txt").write_text("x")
        assert not out.exists()
    assert (out / "a.txt").read_text() == "x"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_full_disk_leaves_nothing_and_names_the_output(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(BigembedError) as info, atomic_output_dir(out, "export"):
        raise OSError(errno.ENOSPC, "No space left on device")
    assert str(info.value) == f"{out}: export failed while writing (No space left on device); nothing was kept"
    assert list(tmp_path.iterdir()) == []


def test_overwrite_keeps_the_old_output_until_the_new_one_is_complete(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(BigembedError, match="already exists"), atomic_output_dir(out, "export"):
        pass
    with pytest.raises(RuntimeError), atomic_output_dir(out, "export", overwrite=True) as tmp:
        (tmp / "new.txt").write_text("new")
        raise RuntimeError("interrupted")
    assert [p.name for p in out.iterdir()] == ["old.txt"]
    with atomic_output_dir(out, "export", overwrite=True) as tmp:
        (tmp / "new.txt").write_text("new")
    assert [p.name for p in out.iterdir()] == ["new.txt"]


def test_stale_temp_folders_of_killed_runs_are_removed_and_live_ones_kept(tmp_path):
    import subprocess
    import sys

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # exited and reaped: its PID no longer names a process
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        out = tmp_path / "out"
        stale, running = tmp_path / f".out.export-{dead.pid}", tmp_path / f".out.export-{live.pid}"
        other_job, other_out = tmp_path / f".out.import-{dead.pid}", tmp_path / f".other.export-{dead.pid}"
        for folder in (stale, running, other_job, other_out):
            (folder / "part").mkdir(parents=True)
        with atomic_output_dir(out, "export") as tmp:
            (tmp / "a.txt").write_text("x")
        assert not stale.exists()
        assert running.exists() and other_job.exists() and other_out.exists()
        assert (out / "a.txt").read_text() == "x"
    finally:
        live.kill()
        live.wait()
