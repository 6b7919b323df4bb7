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
from contextlib import contextmanager
from functools import lru_cache
from typing import Iterator

# glibc's mallopt parameters (malloc.h)
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
GLIBC_MMAP_THRESHOLD = 128 * 1024  # glibc's default, where a threshold set by the environment leaves it


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
    mallopt(M_MMAP_THRESHOLD, 32 << 20)
    mallopt(M_TRIM_THRESHOLD, 256 << 20)
    try:
        yield
    finally:
        mallopt(M_TRIM_THRESHOLD, int(trim))
        mallopt(M_MMAP_THRESHOLD, GLIBC_MMAP_THRESHOLD)
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
