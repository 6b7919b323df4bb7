"""One run's use of the GX project folder, held whole across kills.

GX rewrites `great_expectations.yml` in place (opened with "w", then written) whenever it saves a data
source, an asset or a batch definition, and its suites, validation definitions and checkpoints the same
way. A run killed between the truncation and the write leaves a cut-off file, and nearly any cut-off YAML
makes every later context fail to open or to load its checkpoints (a probe cutting the file at 40 offsets
found one that still worked: the whole file). Whether a YAML file is whole cannot be told from its text.

So each use of the folder is a session: under a lock on the folder (runs of one home take turns), the
project config as it was is first saved whole beside it (`JOURNAL_NAME`, written atomically), and that
journal is removed once the session ends. A journal found at the start of a session means the last one was
killed while GX may have been writing: its config is put back, and the suites, validation definitions and
checkpoints written since the journal (they may name assets the old config lacks) are removed; the run
that follows saves them again from params.yaml. Validation results and Data Docs are left alone: GX
skips a cut-off result when it builds the index.
"""

from __future__ import annotations

import json
import logging
import os
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Iterator

from features.atomic import atomic_write_text
from features.locks import store_lock

logger = logging.getLogger("flywheel.validate")

PROJECT_CONFIG = "great_expectations.yml"  # GX's FileDataContext.GX_YML
CONFIG_FOLDERS = ("expectations", "validation_definitions", "checkpoints")  # GX's stores of derived objects
JOURNAL_NAME = ".flywheel-session.json"  # the project config as a session found it; present only while one runs
LOCK_NAME = ".flywheel-session.lock"
# What GX writes when it scaffolds a new folder, besides the project config: rewritten on the next scaffold.
_SCAFFOLD_FILES = ("uncommitted/config_variables.yml", "expectations/.ge_store_backend_id",
                   "uncommitted/validations/.ge_store_backend_id")

_held: ContextVar[frozenset[str]] = ContextVar("flywheel_gx_sessions", default=frozenset())


@contextmanager
def gx_session(gx_dir: Path) -> Iterator[None]:
    """Hold `gx_dir` for the block: GX's config writes inside it are undone if the process dies mid-block.
    Re-entrant in its thread (an inner session is part of the outer one)."""
    key = str(gx_dir.resolve())
    if key in _held.get():
        yield
        return
    gx_dir.mkdir(parents=True, exist_ok=True)
    with store_lock(gx_dir / LOCK_NAME, f"the GX project folder {gx_dir}"):
        journal = gx_dir / JOURNAL_NAME
        if journal.exists():
            restore_interrupted_session(gx_dir)
        config = gx_dir / PROJECT_CONFIG
        atomic_write_text(journal, json.dumps({"config": config.read_text(encoding="utf-8") if config.exists() else None}))
        token = _held.set(_held.get() | {key})
        whole = False  # whether every write GX began in the block has ended
        try:
            yield
            whole = True
        except Exception as err:
            # GX's writes run to completion before an error reaches here, unless the error is the write's own
            # (a full disk may cut a file as a kill does). An interrupt (KeyboardInterrupt, a signal turned
            # into an exception) may land between GX's truncation and its write: the journal stays for both.
            whole = not isinstance(err, OSError)
            raise
        finally:
            _held.reset(token)
            if whole:
                journal.unlink()


def restore_interrupted_session(gx_dir: Path) -> None:
    """Undo what a killed session may have left half-written (see the module's docstring), and say so."""
    journal = gx_dir / JOURNAL_NAME
    since = journal.stat().st_mtime_ns
    try:
        before = json.loads(journal.read_text(encoding="utf-8"))["config"]
    except (ValueError, KeyError, UnicodeDecodeError) as err:  # written atomically, so only a hand edit gets here
        raise RuntimeError(f"{journal} is not the journal flywheel writes ({err}); remove it and run again") from err
    config = gx_dir / PROJECT_CONFIG
    if before is None:  # the killed session scaffolded the folder: scaffold again
        for name in (PROJECT_CONFIG, *_SCAFFOLD_FILES):
            (gx_dir / name).unlink(missing_ok=True)
    else:
        atomic_write_text(config, before)
    removed = [path for folder in CONFIG_FOLDERS for path in sorted((gx_dir / folder).glob("*.json"))
               if before is None or path.stat().st_mtime_ns >= since]
    for path in removed:
        path.unlink()
    os.unlink(journal)
    what = f"{PROJECT_CONFIG} put back as that use found it" if before is not None else "its scaffold removed"
    if removed:
        what += f", and the configs it wrote removed ({', '.join(p.relative_to(gx_dir).as_posix() for p in removed)})"
    logger.warning("the last use of %s was killed while GX may have been writing: %s; this run saves them again "
                   "from params.yaml", gx_dir, what)
