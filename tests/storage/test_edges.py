"""Edge columns are memory maps; a trainer copies slabs out and then drops the mapped pages."""

import sys

import numpy as np
import pytest
from mmap_ninja import numpy as ninja_np

from bigembed.storage.edges import EdgeArrays


def resident_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/statm")
def test_drop_pages_returns_the_mapped_pages_read_so_far(tmp_path):
    ninja_np.from_ndarray(tmp_path / "lhs", np.arange(8_000_000, dtype=np.int64))  # 61 MiB
    column = ninja_np.open_existing(tmp_path / "lhs", mode="r")
    edges = EdgeArrays(column[1::2], column, column[:5])  # views of the map, as edge chunks make
    before = resident_mib()
    # touch every page of the map without allocating (an allocator that keeps freed memory,
    # as training sets up, would blur the measure)
    assert int(edges.lhs.sum()) == sum(range(1, 8_000_000, 2))
    assert resident_mib() - before > 40
    edges.drop_pages()
    assert resident_mib() - before < 10
    assert int(edges.rhs[123]) == 123  # the map still reads after the drop
