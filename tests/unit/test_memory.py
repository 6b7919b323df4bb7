"""features/memory.py: the pages a stage freed go back to the operating system when it ends."""

from __future__ import annotations

import os

import numpy as np
import pytest

from features.memory import _malloc_trim, release_free_memory


def _rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@pytest.mark.skipif(_malloc_trim() is None, reason="the C library has no malloc_trim")
def test_freed_heap_pages_are_returned_even_with_live_blocks_among_them():
    # 4 KB arrays come from malloc's heap; every 64th stays alive, so the heap cannot shrink from its top and
    # the freed pages between the live blocks stay resident until they are released.
    blocks = [np.ones(4096 // 8) for _ in range(40_000)]  # about 160 MB
    kept = blocks[::64]
    del blocks
    before = _rss_mb()
    release_free_memory()
    after = _rss_mb()
    assert before - after > 100, (before, after)  # most of the 157 MB freed
    assert all(block.sum() == 512 for block in kept)  # what is alive is untouched
