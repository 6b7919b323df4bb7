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

A run may be killed at any moment, also inside DVC, which writes its files in place: the repo is
initialised in a staging folder and moved into place whole, `.dvc/config` is rewritten (atomically)
only when it changes, and what a killed `dvc add` may leave is repaired under the lake's lock before
the next DVC operation: a truncated `<path>.dvc` (the output is tracked again: the same bytes give
the same version) or a truncated `.dvc/tmp/rwlock`. A version counts as pushed only once
`track_and_push` recorded the push, so a kill between the two is completed by the next call.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator
from urllib.parse import quote

from features.atomic import atomic_write_text, remove_orphans, work_name
from features.locks import lake_repo_lock
from features.transient import call_with_retries, retry_transient

if TYPE_CHECKING:
    from dvc.repo import Repo

log = logging.getLogger(__name__)

REMOTE_NAME = "lake"
PUSHED_DIR = ".dvc/tmp/flywheel-pushed"  # one JSON per output whose version `track_and_push` pushed
TRACKED_DIR = ".dvc/tmp/flywheel-tracked"  # one JSON per output: the files' stats its last `dvc add` saw
# Stats are trusted only for files older than this when the add walked them ("racy git"): a file rewritten in
# place within one tick of the filesystem's clock keeps its size and mtime. 2 s covers the coarsest (FAT).
RACY_NS = 2_000_000_000
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
    """`dvc init --no-scm` in a staging folder, its `.dvc` moved into place in one rename: DVC writes its
    config in place, and a run killed during that write would leave a `.dvc` no later run can read."""
    from dvc.repo import Repo

    home.mkdir(parents=True, exist_ok=True)
    remove_orphans(home)  # a staging folder of an init killed here
    staging = Path(tempfile.mkdtemp(dir=home, prefix=work_name("dvc-init")))
    try:
        Repo.init(str(staging), no_scm=True).close()
        try:
            os.rename(staging / ".dvc", home / ".dvc")
        except OSError:
            if not (home / ".dvc").is_dir():  # not a concurrent first run: a real failure
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _configure_repo(home: Path, core: dict[str, Any], remote: dict[str, Any]) -> None:
    """Bring `.dvc/config` in line: DVC's own editor works on a scratch copy (a sibling of `.dvc`, so a
    relative remote path comes out the same), and the result replaces the config atomically, only when
    it differs. A config a killed older writer left unreadable is set aside and written afresh."""
    from dvc.config import Config, ConfigError

    path = home / ".dvc" / "config"
    current = path.read_text() if path.exists() else ""
    remove_orphans(home)  # scratch copies (and the like) of runs killed here
    scratch = Path(tempfile.mkdtemp(dir=home, prefix=work_name("dvc-config")))
    try:
        (scratch / "config").write_text(current)
        try:
            config = Config(str(scratch))
        except ConfigError as err:
            aside = path.with_name(f"config.unreadable-{os.getpid()}")
            log.warning("%s is unreadable (%s); keeping it as %s and writing it afresh", path, err, aside.name)
            shutil.copyfile(path, aside)
            (scratch / "config").write_text("")
            config = Config(str(scratch))
        with config.edit("repo") as conf:
            conf["core"].update(core)
            conf["remote"][REMOTE_NAME] = remote
        wanted = (scratch / "config").read_text()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if wanted != current:
        atomic_write_text(path, wanted)


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
    _disable_telemetry()
    home = Path(home).absolute()
    remote = _remote_config(home, remote_url, endpoint_url)
    if not (home / ".dvc").is_dir():
        _init_repo(home)
    _write_dvcignore(home)
    _configure_repo(home, {"analytics": False, "check_update": False, "no_scm": True, "remote": REMOTE_NAME}, remote)
    return Lake(home, {key: str(value) for key, value in remote.items()})


_MD5 = re.compile(r"^[0-9a-f]{32}(\.dir)?$")


def _read_dvcfile(dvcfile: Path) -> dict[str, Any] | None:
    """The one output entry of a complete `<path>.dvc`; None when the file is not one (DVC writes it in
    place, so a process killed mid-write leaves a prefix: no newline at its end, the path or the md5 cut)."""
    import yaml

    text = dvcfile.read_text(encoding="utf-8", errors="replace")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        return None
    outs = data.get("outs") if isinstance(data, dict) else None
    entry = outs[0] if isinstance(outs, list) and len(outs) == 1 and isinstance(outs[0], dict) else {}
    complete = (text.endswith("\n") and entry.get("path") == dvcfile.name.removesuffix(".dvc")
                and _MD5.match(str(entry.get("md5", ""))) is not None)
    return entry if complete else None


def _stat_fingerprint(path: Path) -> tuple[str, int]:
    """A digest of every file's relative name, size, mtime and inode under `path` (or of the file itself),
    taken in one walk, and the newest mtime: any later write, rename or atomic replace changes the digest."""
    entries: list[tuple[str, int, int, int]] = []
    if path.is_file():
        found = path.stat()
        entries.append(("", found.st_size, found.st_mtime_ns, found.st_ino))
    else:
        for root, dirs, files in os.walk(path):
            dirs.sort()
            for name in sorted(files):
                full = os.path.join(root, name)
                found = os.stat(full)
                entries.append((os.path.relpath(full, path), found.st_size, found.st_mtime_ns, found.st_ino))
    return hashlib.sha256(json.dumps(entries).encode()).hexdigest(), max((e[2] for e in entries), default=0)


def _repair_rwlock(home: Path) -> None:
    """DVC rewrites `.dvc/tmp/rwlock` in place around every add; one a killed process left cut off makes every
    later add fail. Called under the lake's lock, so no DVC operation of ours is under way: remove it.
    (Entries of dead processes in a readable one DVC removes itself.)"""
    path = home / ".dvc" / "tmp" / "rwlock"
    try:
        json.loads(path.read_text())
    except FileNotFoundError:
        return
    except ValueError:
        log.warning("%s was left cut off by a killed DVC process; removing it", path)
        path.unlink(missing_ok=True)


class Lake:
    """Track, push and restore versions of outputs under one FLYWHEEL_HOME."""

    def __init__(self, home: Path, remote: dict[str, str] | None = None) -> None:
        self.home = Path(home).absolute()
        self.remote = remote or {}  # the remote's settings, which a recorded push names

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

        Unchanged content is not hashed again and adds no cache objects; the same bytes always give the
        same version. When no file changed since the last add here (`_unchanged_version`), DVC is not
        even opened: a cached run's version stage is a stat walk.
        """
        path = self._output(relative)
        if not path.exists():
            raise FileNotFoundError(f"cannot version {relative!r}: {path} does not exist; run the stage that writes it first")
        walked = time.time_ns()
        stats, newest = _stat_fingerprint(path)  # before the add: a change during it makes the next call add again
        unchanged = self._unchanged_version(relative, stats)
        if unchanged is not None:
            return unchanged
        call_with_retries("track a lake output (DVC repo lock)", self._add, path)
        version = self._recorded_version(relative)
        if version is None:
            raise RuntimeError(f"`dvc add` of {relative!r} left no readable {self._dvcfile(relative)}")
        record = self._record(TRACKED_DIR, relative)
        if newest < walked - RACY_NS:
            atomic_write_text(record, json.dumps({"stats": stats, "version": asdict(version)}))
        else:  # a file as new as the clock's tick could be rewritten unseen (same size, mtime, inode): trust no stats
            record.unlink(missing_ok=True)
        return version

    def _unchanged_version(self, relative: str, stats: str) -> DataVersion | None:
        """The recorded version when no file under the output changed since the `dvc add` that recorded it
        (same names, sizes, mtimes and inodes: what DVC's own state trusts), so a cached run skips DVC."""
        try:
            tracked = json.loads(self._record(TRACKED_DIR, relative).read_text())
        except (FileNotFoundError, ValueError):
            return None
        version = self._recorded_version(relative)
        if version is None or tracked.get("stats") != stats or tracked.get("version") != asdict(version):
            return None
        return version

    def _add(self, path: Path) -> None:
        with lake_repo_lock(self.home):
            _repair_rwlock(self.home)
            dvcfile = path.with_name(path.name + ".dvc")
            if dvcfile.exists() and _read_dvcfile(dvcfile) is None:
                log.warning("%s was left cut off by a killed `dvc add`; tracking %s again", dvcfile, path.name)
                dvcfile.unlink()
            with self._repo() as repo:
                repo.add([str(path)])

    def version_of(self, relative: str) -> DataVersion | None:
        """The version recorded in `<path>.dvc`, or None when the output was never tracked. A `.dvc` file a
        killed `dvc add` left cut off is replaced by tracking the output again (the same bytes, the same version)."""
        dvcfile = self._dvcfile(relative)
        if not dvcfile.exists():
            return None
        version = self._recorded_version(relative)
        if version is None:
            if not self._output(relative).exists():
                raise FileNotFoundError(f"{dvcfile} is cut off (a killed `dvc add`) and {relative!r} is gone: "
                                        "its version cannot be known; run the stage that writes it again")
            return self.track(relative)
        return version

    def _recorded_version(self, relative: str) -> DataVersion | None:
        """The version in a complete `<path>.dvc`; None when there is none or it is cut off."""
        dvcfile = self._dvcfile(relative)
        entry = _read_dvcfile(dvcfile) if dvcfile.exists() else None
        if entry is None:
            return None
        return DataVersion(path=Path(relative).as_posix(), md5=str(entry["md5"]), files=int(entry.get("nfiles") or 1),
                           size=int(entry.get("size") or 0))

    def _record(self, folder: str, relative: str) -> Path:
        return self.home / folder / (quote(Path(relative).as_posix(), safe="") + ".json")

    def _pushed_record(self, relative: str) -> Path:
        return self._record(PUSHED_DIR, relative)

    def pushed_version(self, relative: str) -> DataVersion | None:
        """The version `track_and_push` pushed of `relative` to this remote, if it is still the tracked one;
        None otherwise (never tracked, or killed between the track and the push, or another remote)."""
        record = self._pushed_record(relative)
        try:
            pushed = json.loads(record.read_text())
        except (FileNotFoundError, ValueError):
            return None
        version = self.version_of(relative)
        if version is None or pushed.get("remote") != self.remote or pushed.get("version") != asdict(version):
            return None
        return version

    def track_and_push(self, relative: str) -> DataVersion:
        """`track`, then `push` that output, then record the push (what `pushed_version` reads)."""
        version = self.track(relative)
        self.push(relative)
        atomic_write_text(self._pushed_record(relative), json.dumps({"version": asdict(version), "remote": self.remote}))
        return version

    def push_pending(self, *relatives: str) -> list[str]:
        """Push those of the outputs whose tracked version this remote has not received yet, and record
        each push (what `pushed_version` reads); returns the outputs pushed. A version is recorded as read
        before its push: if another process tracks anew meanwhile, the record is stale and the next call pushes."""
        pending = {relative: self._recorded_version(relative) for relative in relatives
                   if self.pushed_version(relative) is None}
        if pending:
            self.push(*pending)
        for relative, version in pending.items():
            if version is not None:
                atomic_write_text(self._pushed_record(relative), json.dumps({"version": asdict(version), "remote": self.remote}))
        return list(pending)

    @retry_transient("push the lake to its DVC remote")
    def push(self, *relatives: str) -> int:
        """Copy the cache objects the remote lacks, of the given outputs (default: every tracked one);
        returns how many were copied. Naming the outputs just tracked keeps the cost flat as the lake grows.
        An unreachable remote is tried again with backoff: a push only copies what is missing."""
        targets = [str(self._dvcfile(relative)) for relative in relatives] or None
        with lake_repo_lock(self.home):
            _repair_rwlock(self.home)
            with self._repo() as repo:
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
            _repair_rwlock(self.home)
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
