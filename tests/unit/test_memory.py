"""features/memory.py: the pages a stage freed go back to the operating system when it ends."""

from __future__ import annotations

import os
import types
from pathlib import Path

import numpy as np
import pytest

from features.memory import _malloc_trim, release_free_memory


def _child_env(**thresholds: str) -> dict[str, str]:
    """A child Python's environment: the project importable, glibc's thresholds as given (none: adaptive)."""
    env = {key: value for key, value in os.environ.items()
           if key not in ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_")}
    return {**env, **thresholds, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}


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


_WORKER = """
import os
import numpy as np
from features.memory import steady_allocation

def rss():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

start = rss()
with steady_allocation():
    held = [np.ones(300_000 // 8) for _ in range(400)]  # 120 MB of 300 KB arrays, glibc's mmap size
    del held
    inside = rss()
print(start, inside, rss())
"""


@pytest.mark.skipif(_malloc_trim() is None, reason="the C library has no malloc_trim")
def test_a_dask_worker_keeps_freed_arrays_while_a_chunk_runs_and_gives_them_back_after():
    """Under Dask's MALLOC_TRIM_THRESHOLD_ every 300 KB array would be its own mmap, unmapped when freed; while a
    chunk runs the heap keeps them for reuse, and when it ends the memory goes back to the system."""
    import subprocess
    import sys

    env = _child_env(MALLOC_TRIM_THRESHOLD_="65536")
    done = subprocess.run([sys.executable, "-c", _WORKER], env=env, capture_output=True, text=True, check=True)
    start, inside, end = map(float, done.stdout.split())
    assert inside - start > 80, (start, inside, end)  # freed inside the chunk, kept by the heap for reuse
    assert end - start < 20, (start, inside, end)  # handed back when it ends


def _owner(obj: object) -> object:
    # A bound method counts as its instance. No getattr on the object itself: some objects in gc.garbage (an
    # SQLAlchemy class registry, once another test imported it) raise NameError for a missing attribute.
    return obj.__self__ if isinstance(obj, types.MethodType) else obj


def _flywheel_object(obj: object) -> bool:
    module = getattr(type(_owner(obj)), "__module__", "") or ""
    return module.split(".")[0] in ("features", "models", "flows")


def test_clean_leaves_no_reference_cycles_of_its_own_for_the_garbage_collector(demo_batch_factory, tmp_path):
    """What clean drops is freed at once, not when Python's cyclic collector next runs: a model-input builder that
    held a bound method of its own (a cycle) kept its arrays, about 6 MB per 256 rows, until then, and a clean of
    20k rows peaked 80 MB higher (benchmarks/data_plane.py)."""
    import gc

    from features.clean import clean_batch
    from features.ingest import ingest_batch
    from flows.settings import load_settings
    from flows.stage_config import clean_params
    from tests.conftest import PROJECT

    params = clean_params(load_settings(tmp_path / "home", PROJECT / "params.yaml"))
    raw = ingest_batch(demo_batch_factory(samples=60, seed=1), tmp_path / "raw").batch_dir
    clean_batch(raw, tmp_path / "warm-up", params)  # first-use imports and caches (scipy, threadpoolctl) aside
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)  # what the collector finds unreachable is kept in gc.garbage to look at
    try:
        result = clean_batch(raw, tmp_path / "clean", params)
        del result
        gc.collect()
        cyclic = [obj for obj in gc.garbage if _flywheel_object(obj)]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    assert not cyclic, sorted({type(_owner(o)).__qualname__ for o in cyclic})


_TABLE_STAGE = """
import os, sys
import numpy as np
from features.memory import table_allocation

def rss():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

def stage():
    # A whole-table stage's pattern: column-size working copies freed among small blocks that stay alive (the
    # holes they leave are too small for the next, larger copies), then the larger copies it keeps.
    small, copies = [], []
    for _ in range(150):
        copies.append(np.ones(400_000 // 8))
        small.append(np.ones(64_000 // 8))
    del copies
    kept = [np.ones(600_000 // 8) for _ in range(150)]
    return rss(), small, kept

big = np.ones((8 << 20) // 8)  # freed: as after decoding, glibc's adaptive threshold has risen past a column's size
del big
start = rss()
if sys.argv[1] == "table":
    with table_allocation():
        inside, *held = stage()
else:
    inside, *held = stage()
print(inside - start)
"""


@pytest.mark.skipif(_malloc_trim() is None, reason="glibc's malloc only")
def test_a_table_stage_holds_what_it_keeps_not_the_holes_its_freed_copies_left():
    """Kept: 90 MB of copies and 10 MB of small blocks. Under glibc's adaptive threshold the 60 MB of freed
    copies stay resident between the small blocks as well; inside table_allocation each copy was its own
    mapping, gone when freed."""
    import subprocess
    import sys

    env = _child_env()
    growth = {mode: float(subprocess.run([sys.executable, "-c", _TABLE_STAGE, mode], env=env, capture_output=True,
                                         text=True, check=True).stdout)
              for mode in ("adaptive", "table")}
    assert growth["adaptive"] > 140, growth  # the freed copies' 60 MB on top of the 100 MB kept
    assert growth["table"] < 120, growth


def test_table_allocation_leaves_the_thresholds_where_the_adaptive_ones_end_and_nests():
    """After a table stage the process decodes as fast as before: arrays under 32 MB come from the heap again,
    also after a nested use; inside, even the inner use's end leaves column-size arrays mapped."""
    import subprocess
    import sys

    script = """
import ctypes, numpy as np
from features.memory import table_allocation

class Info(ctypes.Structure):  # glibc's struct mallinfo2
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = Info

def mapped_by(size):
    before = libc.mallinfo2().hblkhd
    array = np.ones(size // 8)
    return libc.mallinfo2().hblkhd - before >= size

with table_allocation():
    with table_allocation():
        pass
    inside = mapped_by(1 << 20)
after = mapped_by(1 << 20), mapped_by(8 << 20), mapped_by(40 << 20)
print(inside, *after)
"""
    env = _child_env()
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    if "mallinfo2" in done.stderr:
        pytest.skip("the C library has no mallinfo2")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "False", "False", "True"]


def test_ingest_and_clean_leave_no_file_name_in_the_interpreters_interned_strings(demo_batch_factory, tmp_path,
                                                                                 monkeypatch):
    """On Python 3.11 a pathlib.Path interns every part of its path, and the table of interned strings never
    shrinks: a Path per file of the batch kept about 10 MB at 100k rows in every stage after ingest."""
    import sys

    from features.clean import clean_batch
    from features.ingest import ingest_batch
    from features.manifest import iter_manifest
    from flows.settings import load_settings
    from flows.stage_config import clean_params
    from tests.conftest import PROJECT

    batch = demo_batch_factory(samples=30, seed=2)
    names = {name for row in iter_manifest((batch / "manifest.jsonl").read_bytes(), batch)
             if isinstance(row, dict) for name in (str(row.get("image")), str(row.get("audio")))}
    stems = {name.rsplit("/", 1)[-1].rsplit(".", 1)[0] for name in names}
    interned: list[str] = []
    intern = sys.intern

    def recording(text: str) -> str:
        if any(stem in text for stem in stems):
            interned.append(text)
        return intern(text)

    monkeypatch.setattr(sys, "intern", recording)
    raw = ingest_batch(batch, tmp_path / "raw").batch_dir
    assert not interned, interned[:5]
    clean_batch(raw, tmp_path / "clean", clean_params(load_settings(tmp_path / "home", PROJECT / "params.yaml")))
    assert not interned, interned[:5]


_COPY_ON_WRITE = """
from features.env import apply_process_environment
apply_process_environment()
import numpy as np
import pandas as pd
table = pd.DataFrame({"a": np.arange(100_000.0), "b": np.ones(100_000)})
kept = table[table["a"].notnull()]  # what GX does per expectation: every row passes, so a copy of all of them
shared = np.shares_memory(kept["b"].to_numpy(), table["b"].to_numpy())
kept.loc[0, "b"] = 5.0  # a write to one side copies it then; the other keeps its values
print(shared, table.loc[0, "b"], kept.loc[0, "b"])
"""


def test_a_flywheel_process_copies_a_table_only_when_a_copy_is_written():
    import subprocess
    import sys

    env = {key: value for key, value in _child_env().items() if key != "PANDAS_COPY_ON_WRITE"}
    done = subprocess.run([sys.executable, "-c", _COPY_ON_WRITE], env=env, capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["True", "1.0", "5.0"]
