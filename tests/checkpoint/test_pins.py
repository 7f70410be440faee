"""Readers pin the version they read; garbage collection keeps pinned versions and drops
the pins of readers that are gone."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bigembed.checkpoint import collect_garbage
from bigembed.checkpoint.pins import live_pins, pin_version
from bigembed.checkpoint.versions import list_versions
from bigembed.errors import CheckpointError
from tests.checkpoint.test_versions import commit


def chain(run: Path, n: int):
    x = np.ones((3, 2), np.float32)
    m = commit(run, None, 0, {"a": x})
    for v in range(1, n):
        m = commit(run, m, v, {"a": x * v})
    return m


def test_garbage_collection_keeps_a_version_a_reader_pinned(tmp_path):
    newest = chain(tmp_path, 4)
    with pin_version(tmp_path, 1):
        assert live_pins(tmp_path) == {1}
        collect_garbage(tmp_path, newest, keep=1)
        assert list_versions(tmp_path) == [1, 3]
    collect_garbage(tmp_path, newest, keep=1)  # the reader is done: its pin is gone
    assert list_versions(tmp_path) == [3]


def test_the_pin_of_a_killed_reader_is_dropped(tmp_path):
    newest = chain(tmp_path, 3)
    code = ("import os, sys; from bigembed.checkpoint.pins import pin_version\n"
            f"with pin_version({str(tmp_path)!r}, 0):\n    print('pinned', flush=True); sys.stdin.read()\n")
    reader = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert reader.stdout is not None and reader.stdout.readline().strip() == "pinned"
        collect_garbage(tmp_path, newest, keep=1)
        assert 0 in list_versions(tmp_path)  # held by a live process
    finally:
        reader.kill()
        reader.wait()
    collect_garbage(tmp_path, newest, keep=1)  # kill -9 left the pin file; its lock went with the process
    assert list_versions(tmp_path) == [2]
    assert not list((tmp_path / "pins").glob("*.pin"))


def test_pinning_a_version_that_is_gone_is_a_one_line_error(tmp_path):
    newest = chain(tmp_path, 3)
    collect_garbage(tmp_path, newest, keep=1)
    with pytest.raises(CheckpointError, match=r"version v0 does not exist \(committed versions: v2\)"), \
            pin_version(tmp_path, 0):
        pass
