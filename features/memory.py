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
import sys
from functools import lru_cache


@lru_cache(maxsize=1)
def _malloc_trim():
    """glibc's malloc_trim, or None where the C library has none (musl, macOS)."""
    name = ctypes.util.find_library("c")
    try:
        return getattr(ctypes.CDLL(name), "malloc_trim", None) if name else None
    except OSError:
        return None


def release_free_memory() -> None:
    """Return the pages the allocators hold free to the operating system: Arrow's pool (when pyarrow is in use)
    and glibc's heaps. Nothing allocated is touched, so it is safe at any point; it costs a few milliseconds."""
    pyarrow = sys.modules.get("pyarrow")
    if pyarrow is not None:
        pyarrow.default_memory_pool().release_unused()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
