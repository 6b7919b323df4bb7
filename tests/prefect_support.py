"""Prefect's test harness on a database migrated once per test session.

`prefect_test_harness` starts its server on a new SQLite file, which the server migrates first: 6 of the
11 CPU-seconds a harness start took here, and eight test modules start one. `prefect_harness` starts the
same harness (same server, same settings, its own database) on a copy of one database that `prefect server
database upgrade` migrated once per test session, shared by the pytest-xdist workers under a file lock:
4.5 CPU-seconds per start. The copy lands where the harness creates its database (the `prefect-test.db` of
the folder it makes); should a Prefect release name the file otherwise, the copy goes unused and the server
migrates its own database as before, only slower.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

import pytest

HARNESS_DATABASE = "prefect-test.db"  # the file prefect_test_harness creates in its temporary folder


def migrated_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated Prefect SQLite database for this test session, made on first use (by whichever worker asks
    first, the others waiting on its lock) and published by a rename, so no worker copies a half-made one."""
    from filelock import FileLock

    from tests.conftest import session_folder

    shared = session_folder(tmp_path_factory)
    template = shared / "prefect-migrated.db"
    with FileLock(str(shared / "prefect-migrated.db.lock")):
        if not template.is_file():
            work = shared / f".prefect-migrating-{os.getpid()}.db"
            work.unlink(missing_ok=True)
            env = {**os.environ, "PREFECT_SERVER_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{work}"}
            done = subprocess.run([str(Path(sys.executable).with_name("prefect")), "server", "database", "upgrade",
                                   "-y"], env=env, capture_output=True, text=True)
            if done.returncode != 0:
                raise RuntimeError(f"prefect server database upgrade failed ({done.returncode}):\n"
                                   f"{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
            os.replace(work, template)
    return template


@contextmanager
def prefect_harness(tmp_path_factory: pytest.TempPathFactory, server_startup_timeout: int = 120) -> Iterator[None]:
    """`prefect_test_harness(server_startup_timeout)`, its server started on a copy of the session's migrated
    database (`migrated_template`)."""
    import prefect.testing.utilities as harness_module

    template = migrated_template(tmp_path_factory)

    def seeded_folder() -> str:
        folder = tempfile.mkdtemp()
        shutil.copyfile(template, Path(folder) / HARNESS_DATABASE)
        return folder

    with mock.patch.object(harness_module, "mkdtemp", seeded_folder):
        with harness_module.prefect_test_harness(server_startup_timeout=server_startup_timeout):
            yield
