"""Freed memory handed back to the operating system at the end of a data stage.

A stage that decodes or validates a large batch frees most of what it allocated when it returns, but the
allocators keep the pages: glibc's malloc (numpy, pandas, Python objects) holds the freed top of its heaps,
and Arrow's memory pool (mimalloc) its freed segments. The next stage then starts from the last one's high-water
mark. Measured (benchmarks/data_plane.py, docs/reference/testing.md): every stage's peak 8-24 MB lower at 1k
rows and 6-42 MB lower at 100k; what grows with the batch (the tables a stage holds) is not touched by it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
import threading
from contextlib import contextmanager
from functools import lru_cache
from typing import Iterator

# glibc's mallopt parameters (malloc.h)
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
GLIBC_MMAP_THRESHOLD = 128 * 1024  # glibc's default, where a threshold set by the environment leaves it
GLIBC_DYNAMIC_MMAP_MAX = 32 << 20  # where glibc's adaptive threshold stops rising (64-bit); its trim follows at 2x
# While a table stage runs, each array of this size or more gets its own mapping: a column of 8k float64 values, and
# the boolean masks GX builds per expectation from 64k rows on (at 100k rows, validation's peak 2.3-2.6 MB lower than
# at 256 KB, at the same CPU time)
TABLE_MMAP_THRESHOLD = 64 * 1024


@lru_cache(maxsize=1)
def _libc():
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name) if name else None
    except OSError:
        return None


def _malloc_trim():
    """glibc's malloc_trim, or None where the C library has none (musl, macOS)."""
    return getattr(_libc(), "malloc_trim", None)


@contextmanager
def steady_allocation() -> Iterator[None]:
    """Let glibc keep the memory a chunk of decoding frees and reuses, then hand it back at the end.

    Dask's nanny starts its workers with MALLOC_TRIM_THRESHOLD_=65536 so that they return memory to the
    operating system. Setting it turns off glibc's adaptive thresholds, so every array of 128 KB or more (a
    few clips' frames, spectra, a part's arrays) is a fresh mmap whose pages fault in zeroed, and is unmapped
    when freed: a 256-row chunk of demo rows took 1.14-1.18 s in such a worker against 0.72-0.74 s in one
    without it. Where that variable is set, this keeps allocations under 32 MB in the heap and its freed top
    up to 256 MB while the chunk runs, then restores the thresholds and trims (release_free_memory), so the
    worker still gives the memory back after each chunk. Elsewhere (glibc adapting on its own) it does nothing."""
    trim = os.environ.get("MALLOC_TRIM_THRESHOLD_")
    mallopt = getattr(_libc(), "mallopt", None)
    if trim is None or mallopt is None or not trim.isdigit():
        yield
        return
    mallopt(M_MMAP_THRESHOLD, GLIBC_DYNAMIC_MMAP_MAX)
    mallopt(M_TRIM_THRESHOLD, 256 << 20)
    try:
        yield
    finally:
        _restore_thresholds(mallopt)
        release_free_memory()


def release_free_memory() -> None:
    """Return the pages the allocators hold free to the operating system: Arrow's pool (when pyarrow is in use)
    and glibc's heaps. Nothing allocated is touched, so it is safe at any point; it costs a few milliseconds."""
    pyarrow = sys.modules.get("pyarrow")
    if pyarrow is not None:
        pyarrow.default_memory_pool().release_unused()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


_table_depth = 0
_table_lock = threading.Lock()


@contextmanager
def table_allocation() -> Iterator[None]:
    """Map each array of 64 KB or more on its own while a stage works on a whole table, so that it is unmapped
    the moment it is freed.

    GX copies the batch's table once per column-map expectation (and hashes it, which turns Arrow text into
    Python strings), and a transform builds its columns from the table's: many short-lived arrays of a column's
    size. glibc's adaptive threshold, raised by the decoding before, puts them in the heap, where the freed ones
    leave holes that the next copies do not fill, so the stage's RSS climbs past what it holds. Measured on a
    100k-row clean table (docs/reference/testing.md): validation's peak 12-16 MB lower, the transform's 7-11 MB,
    at the same speed; at 1k rows the arrays are under the threshold and nothing changes.

    Decoding many mid-size arrays runs a third slower under such a threshold (`steady_allocation`), so it holds
    only inside the stage. glibc keeps a threshold set by mallopt fixed from then on, so on the way out it is set
    where the adaptive one ends up: 32 MB, its trim at 64 MB (clean ran at the same speed and peak under that as
    under the adaptive one), or, where the environment sets the thresholds (a Dask worker's
    MALLOC_TRIM_THRESHOLD_), back to what that gives. Nested uses keep the threshold until the outermost ends."""
    global _table_depth
    mallopt = getattr(_libc(), "mallopt", None)  # None off glibc: only the release at the end applies
    with _table_lock:
        _table_depth += 1
        if _table_depth == 1 and mallopt is not None:
            mallopt(M_MMAP_THRESHOLD, TABLE_MMAP_THRESHOLD)
    try:
        yield
    finally:
        with _table_lock:
            _table_depth -= 1
            if _table_depth == 0 and mallopt is not None:
                _restore_thresholds(mallopt)
        release_free_memory()  # what the stage freed, in whichever allocator


def _restore_thresholds(mallopt) -> None:
    """The thresholds as the environment fixed them (a Dask worker's MALLOC_TRIM_THRESHOLD_), else where glibc's
    adaptive ones end up."""
    mmap, trim = os.environ.get("MALLOC_MMAP_THRESHOLD_", ""), os.environ.get("MALLOC_TRIM_THRESHOLD_", "")
    if mmap.isdigit() or trim.isdigit():  # thresholds the environment fixed
        mallopt(M_MMAP_THRESHOLD, int(mmap) if mmap.isdigit() else GLIBC_MMAP_THRESHOLD)
        if trim.isdigit():
            mallopt(M_TRIM_THRESHOLD, int(trim))
        return
    mallopt(M_MMAP_THRESHOLD, GLIBC_DYNAMIC_MMAP_MAX)
    mallopt(M_TRIM_THRESHOLD, 2 * GLIBC_DYNAMIC_MMAP_MAX)
