"""Lake versioning: each lake snapshot and stage output is a DVC output, its DVC hash the data version.

FLYWHEEL_HOME need not be inside a git repository (and the project's own repo ignores it), so the
lake is versioned by a DVC repository rooted at FLYWHEEL_HOME itself, without SCM: a tracked folder
`lake/raw/<batch_id>` gets a `lake/raw/<batch_id>.dvc` file beside it, its content goes into the
cache under `.dvc/cache`, and `push` copies the cache to the remote (a local folder by default, S3 or
MinIO in the compose stack). A version is DVC's md5 of the output (`<md5>.dir` for a folder), so the
same bytes give the same version wherever and however often they are tracked; `checkout` brings an
earlier version back from the cache or the remote, which is how a model's data is reproduced.

Without git the `.dvc` files hold only the current version of each output; the versions worth
keeping are the ones written into run summaries and model-version tags, and the cache and the
remote keep their content (nothing here runs `dvc gc`).
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from features.atomic import atomic_write_text
from features.locks import lake_repo_lock
from features.transient import call_with_retries, retry_transient

if TYPE_CHECKING:
    from dvc.repo import Repo

REMOTE_NAME = "lake"
DEFAULT_REMOTE_DIR = "dvc-remote"  # under FLYWHEEL_HOME, beside the project's own DVC remote
# Work names of atomic writes (`features/atomic.py`): staging and trash folders, and the temporary files a
# writer killed mid-write leaves (`.<name>.pid<N>-<host>.…`); lock files (`features/locks.py`). Never part
# of a version, if a folder holding them is tracked (the golden set's folder holds its own small lake).
DVCIGNORE_LINES = ("# written by flywheel: work folders, never part of a version", ".staging-*/", ".trash-*/", ".*.pid[0-9]*",
                   ".locks/")


def _disable_telemetry() -> None:
    """DVC's analytics and update check, whoever imports us: the repo config says so too, the
    environment covers any `dvc` command a library starts from another folder."""
    if not os.environ.get("DVC_NO_ANALYTICS"):  # DVC reads any non-empty value as "off"
        os.environ["DVC_NO_ANALYTICS"] = "1"
    _repoint_dvc_log_streams()


def _repoint_dvc_log_streams() -> None:
    """`import dvc` binds its log handlers to sys.stdout/sys.stderr as they are at that moment. When
    that was inside a CLI runner or a captured test, those streams are closed later, and DVC's
    handler turns the next warning it logs into an exception: point closed ones at today's stderr."""
    import logging
    import sys

    for name in ("dvc", "dvc_data", "dvc_objects"):
        for handler in logging.getLogger(name).handlers:
            stream = getattr(handler, "stream", None)
            if stream is not None and getattr(stream, "closed", False):
                handler.stream = sys.stderr  # not setStream(): it flushes the closed stream first


@dataclass(frozen=True)
class DataVersion:
    """One version of one lake output."""

    path: str  # relative to FLYWHEEL_HOME, e.g. "lake/raw/<batch_id>"
    md5: str  # DVC's hash of the output: "<md5>.dir" for a folder, "<md5>" for a file
    files: int
    size: int  # bytes

    def to_tag(self) -> str:
        """`path@md5`, the form written into run summaries and model-version tags."""
        return f"{self.path}@{self.md5}"


def _remote_config(home: Path, remote_url: str | None, endpoint_url: str | None) -> dict[str, str]:
    from dvc.config_schema import RelPath

    if remote_url is None:
        if endpoint_url is not None:
            raise ValueError(f"endpoint_url {endpoint_url!r} needs a remote_url such as s3://bucket/lake")
        return {"url": RelPath(home / DEFAULT_REMOTE_DIR)}  # saved relative to .dvc/, so the home may move
    config = {"url": remote_url}
    if endpoint_url is not None:
        if not remote_url.startswith("s3://"):
            raise ValueError(f"endpoint_url is for S3 remotes (MinIO); remote_url {remote_url!r} is not s3://…")
        config["endpointurl"] = endpoint_url
    return config


def _init_repo(home: Path) -> None:
    from dvc.exceptions import InitError
    from dvc.repo import Repo

    home.mkdir(parents=True, exist_ok=True)
    try:
        Repo.init(str(home), no_scm=True).close()
    except InitError:
        if not (home / ".dvc").is_dir():  # not a concurrent first run: a real failure
            raise


def _write_dvcignore(home: Path) -> None:
    path = home / ".dvcignore"
    text = path.read_text() if path.exists() else ""
    missing = [line for line in DVCIGNORE_LINES if line not in text.splitlines()]
    if missing:
        atomic_write_text(path, text + ("" if not text or text.endswith("\n") else "\n") + "\n".join(missing) + "\n")


def open_lake(home: Path, remote_url: str | None = None, endpoint_url: str | None = None) -> Lake:
    """The DVC repo at `home`, created on first use; its config is brought in line on every call.

    `remote_url` None means the local folder `home/dvc-remote`; otherwise a DVC remote URL such as
    `s3://bucket/lake`, with `endpoint_url` for MinIO. Credentials are never written here: DVC's S3
    remote reads them from the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY).
    """
    from dvc.config import Config

    _disable_telemetry()
    home = Path(home).absolute()
    if not (home / ".dvc").is_dir():
        _init_repo(home)
    _write_dvcignore(home)
    wanted = {"analytics": False, "check_update": False, "no_scm": True, "remote": REMOTE_NAME}
    remote = _remote_config(home, remote_url, endpoint_url)
    with Config(str(home / ".dvc")).edit("repo") as conf:
        conf["core"].update(wanted)
        conf["remote"][REMOTE_NAME] = remote
    return Lake(home)


class Lake:
    """Track, push and restore versions of outputs under one FLYWHEEL_HOME."""

    def __init__(self, home: Path) -> None:
        self.home = Path(home).absolute()

    @contextmanager
    def _repo(self) -> Iterator[Repo]:
        """A fresh Repo per operation: nothing stale between calls, its SQLite handles closed after."""
        from dvc.repo import Repo

        _disable_telemetry()
        with Repo(str(self.home)) as repo:
            yield repo

    def _output(self, relative: str) -> Path:
        path = Path(os.path.normpath(self.home / relative))
        if path == self.home or self.home not in path.parents:
            raise ValueError(f"{relative!r} is not a path inside {self.home}; expected e.g. 'lake/raw/<batch_id>'")
        return path

    def _dvcfile(self, relative: str) -> Path:
        path = self._output(relative)
        return path.with_name(path.name + ".dvc")

    def track(self, relative: str) -> DataVersion:
        """`dvc add` the folder or file: hash it, store its content in the cache, write `<path>.dvc`.

        Unchanged content is not hashed again (DVC's state keeps inode and mtime) and adds no
        cache objects; the same bytes always give the same version.
        """
        path = self._output(relative)
        if not path.exists():
            raise FileNotFoundError(f"cannot version {relative!r}: {path} does not exist; run the stage that writes it first")
        call_with_retries("track a lake output (DVC repo lock)", self._add, path)
        version = self.version_of(relative)
        assert version is not None
        return version

    def _add(self, path: Path) -> None:
        with lake_repo_lock(self.home), self._repo() as repo:
            repo.add([str(path)])

    def version_of(self, relative: str) -> DataVersion | None:
        """The version recorded in `<path>.dvc`, or None when the output was never tracked."""
        dvcfile = self._dvcfile(relative)
        if not dvcfile.exists():
            return None
        with self._repo() as repo:
            out = repo.stage.load_one(str(dvcfile)).outs[0]
        return DataVersion(
            path=Path(relative).as_posix(), md5=out.hash_info.value, files=out.meta.nfiles or 1, size=out.meta.size or 0,
        )

    @retry_transient("push the lake to its DVC remote")
    def push(self, *relatives: str) -> int:
        """Copy the cache objects the remote lacks, of the given outputs (default: every tracked one);
        returns how many were copied. Naming the outputs just tracked keeps the cost flat as the lake grows.
        An unreachable remote is tried again with backoff: a push only copies what is missing."""
        targets = [str(self._dvcfile(relative)) for relative in relatives] or None
        with lake_repo_lock(self.home), self._repo() as repo:
            return repo.push(targets=targets, remote=REMOTE_NAME)

    def checkout(self, relative: str, md5: str) -> DataVersion:
        """Make the output hold version `md5` again, fetching it from the remote when the cache lacks it.

        The current content is tracked first, so it stays in the cache and nothing is lost. A version
        found neither in the cache nor on the remote raises, leaving the output and its `.dvc` file as they were.
        """
        dvcfile = self._dvcfile(relative)
        if not dvcfile.exists():
            raise FileNotFoundError(f"{relative!r} was never tracked ({dvcfile} is missing); nothing to check out")
        with lake_repo_lock(self.home):
            return self._checkout(relative, md5, dvcfile)

    def _checkout(self, relative: str, md5: str, dvcfile: Path) -> DataVersion:
        from dvc_data.hashfile.hash_info import HashInfo
        from dvc_data.hashfile.meta import Meta

        if self._output(relative).exists():
            self.track(relative)
        before = dvcfile.read_text()
        with self._repo() as repo:
            stage = repo.stage.load_one(str(dvcfile))
            out = stage.outs[0]
            out.hash_info = HashInfo("md5", md5)
            out.meta = Meta(isdir=HashInfo("md5", md5).isdir)
            stage.dump()
            try:
                if not _in_cache(repo, md5):
                    repo.fetch(targets=[str(dvcfile)], remote=REMOTE_NAME)
                if not _in_cache(repo, md5):
                    raise LookupError(
                        f"version {md5} of {relative!r} is neither in the cache nor on remote {REMOTE_NAME!r};"
                        " expected a version recorded by track() and pushed"
                    )
                repo.checkout(targets=[str(dvcfile)], force=True)
            except BaseException:
                atomic_write_text(dvcfile, before)
                raise
        return self.track(relative)  # records size and file count of the restored version


def _in_cache(repo: Repo, md5: str) -> bool:
    """The object and, for a folder, every file it lists, are in the local cache."""
    from dvc_data.hashfile.hash_info import HashInfo
    from dvc_data.hashfile.tree import Tree

    odb = repo.cache.repo  # the DVC 3 cache, .dvc/cache/files/md5
    if not odb.exists(md5):
        return False
    if not HashInfo("md5", md5).isdir:
        return True
    tree = Tree.load(odb, HashInfo("md5", md5))
    oids = {entry_hash.value for _, _, entry_hash in tree}
    return len(set(odb.oids_exist(oids))) == len(oids)
