"""Ingest: snapshot a landing batch into the lake, identified by the hash of its content.

The batch id is a hash of the manifest bytes and of every file it names, so the same bytes
are one batch however often they arrive, and a changed file makes a new batch.

A batch whose manifest no snapshot in the lake has is new: its files are read once, copied into an unnamed
staging folder and hashed on the way, and the folder is named from the hashes afterwards. A manifest the
lake already holds is likely a repeat: its files are hashed first (reads only), so a known batch is skipped
without writing anything, and a changed one is copied and checked against that scan.

A source is a local folder or any fsspec URI (`file://`, `memory://`, `s3://` on MinIO...). A
remote batch is first copied to a local landing folder, the manifest and only the files it
names, so it gets the id that the same bytes get from a local folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import shutil
import socket
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, TypeVar

import fsspec
from fsspec.implementations.local import LocalFileSystem

from features.atomic import make_staging_dir, publish_directory, work_name
from features.io import save_json
from features.locks import ingest_lock
from features.memory import steady_allocation
from features.manifest import (
    FILE_FIELDS,
    MANIFEST_NAME,
    iter_manifest,
    iter_manifest_with_paths,
    resolve_inside,
    split_manifest,
)
from features.records import BatchError, QuarantineRecord, StageReport
from features.transient import retry_transient

ROWS_NAME = "rows.jsonl"
DONE_NAME = "_SUCCESS.json"
_CHUNK = 1 << 20
_UNREADABLE = {"bad_json", "bad_encoding"}  # reasons that mean a line was not a JSON object at all
# Manifest lines per unit of parallel work (a chunk: copied into the snapshot, and hashed by a scan before when
# the manifest is known): CHUNKS_PER_WORKER units per worker, but at least CHUNK_LINES lines, so a small batch
# pays little per-unit overhead, and at most MAX_CHUNK_LINES, so a worker's part of `rows.jsonl` stays small.
# The chunks change how the work is spread, never the batch id or the snapshot.
CHUNK_LINES, MAX_CHUNK_LINES, CHUNKS_PER_WORKER = 512, 4096, 2

_Part = TypeVar("_Part")
# Runs `fn(chunk, *args)` for every chunk and yields the results in chunk order. The default runs them one
# after the other in this thread, as they are cut; the lifecycle flow passes one that maps them on its Dask
# cluster when one is configured (flows/lifecycle.py).
ChunkMapper = Callable[..., Iterable[Any]]


@dataclass(frozen=True)
class IngestResult:
    batch_id: str
    batch_dir: Path  # the snapshot in the lake
    report: StageReport


def hash_file(path: Path | str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _hash_if_readable(path: Path | str) -> str | None:
    """The file's sha256, or None when it is missing, not a regular file (a FIFO is never opened) or unreadable."""
    try:
        return hash_file(path) if os.path.isfile(path) else None
    except OSError:  # permission denied, name too long, vanished meanwhile
        return None


def _read_manifest(source: Path) -> bytes:
    manifest = source / MANIFEST_NAME
    if not source.is_dir():
        raise BatchError(
            f"{source} is not a folder; a landing batch is a folder holding {MANIFEST_NAME} and the files it names"
        )
    if not manifest.is_file():
        raise BatchError(
            f"{source} is not a landing batch: {MANIFEST_NAME} is missing; expected a UTF-8 JSON Lines file"
            " with one sample object per line"
        )
    try:
        resolve_inside(source, MANIFEST_NAME)
        return manifest.read_bytes()
    except ValueError as err:
        raise BatchError(f"{manifest} is refused: {err}; the manifest must be a file inside the batch") from err
    except OSError as err:
        raise BatchError(f"cannot read {manifest}: {err}") from err


def _refuse_unreadable_manifest(origin: str, accepted: int, rejected: list[QuarantineRecord]) -> None:
    """A manifest none of whose lines is a JSON object is the wrong file, not a batch of bad rows."""
    if accepted or not rejected or any(record.reason not in _UNREADABLE for record in rejected):
        return
    raise BatchError(
        f"{origin}/{MANIFEST_NAME} is not JSON Lines: none of its {len(rejected)} non-blank lines is a JSON object"
        f" ({rejected[0].detail}); expected one object per line, e.g."
        ' {"sample_id": "s1", "captured_at": "2026-01-01T00:00:00Z", "image": "images/s1.png"}'
    )


@dataclass(frozen=True)
class ManifestChunk:
    """A run of the manifest's lines, cut at a line end; whoever hashes or copies its rows (this thread, a task
    on a Dask worker) parses them as one pass over the whole manifest would."""

    index: int
    first_line: int  # the 1-based number of its first line in the manifest
    text: bytes


@dataclass(frozen=True)
class ScanPart:
    """What the scan of one chunk learns: its rows' counts and records, and what its files add to the batch id."""

    rows_in: int
    accepted: int
    rejected: list[QuarantineRecord]
    files: bytes  # "<field>:<path>:<sha256>" of each existing file, in manifest order


@dataclass(frozen=True)
class CopyPart:
    """What the copy of one chunk wrote and learnt: its lines of `rows.jsonl`, and the scan of the bytes it
    copied (equal to a scan made before, unless a file changed in between)."""

    rows: bytes
    scan: ScanPart


@dataclass(frozen=True)
class _Scan:
    """What one pass over a landing batch learns without keeping its rows."""

    batch_id: str
    rows_in: int  # non-blank manifest lines
    accepted: int
    rejected: list[QuarantineRecord]
    chunk_sha256: tuple[bytes, ...] = ()  # per chunk, the sha256 of its ScanPart.files


def chunk_lines(data: bytes, workers: int) -> int:
    """Lines per chunk for `workers` workers (CHUNK_LINES ... MAX_CHUNK_LINES, about CHUNKS_PER_WORKER each)."""
    lines = data.count(b"\n") + 1  # line ends other than \n only make the chunks longer
    return min(MAX_CHUNK_LINES, max(CHUNK_LINES, -(-lines // (CHUNKS_PER_WORKER * max(1, workers)))))


def manifest_chunks(data: bytes, lines: int) -> Iterator[ManifestChunk]:
    """The manifest's lines in chunks of `lines` lines, cut as they are reached."""
    for index, (first_line, text) in enumerate(split_manifest(data, lines)):
        yield ManifestChunk(index, first_line, text)


def map_in_order(fn: Callable[..., _Part], chunks: Iterable[ManifestChunk], *args: Any) -> Iterator[_Part]:
    """The default mapper: each chunk in turn, in this thread, cut as it is reached, so one chunk's text is
    held at a time. (Threads gain nothing here: creating files in one folder takes the folder's lock.)"""
    return (fn(chunk, *args) for chunk in chunks)


def scan_manifest_chunk(chunk: ManifestChunk, source: Path) -> ScanPart:
    """Parse the chunk's rows and hash the files they name (a top-level function, so a Dask worker can run it)."""
    with steady_allocation():  # in a Dask worker, each 1 MB read buffer would be a fresh mmap (features.memory)
        return _scan_rows(chunk, source)


def _refuse_unseen(folder: Path, role: str) -> None:
    """A worker that does not see the batch (no shared filesystem) must stop the ingest, not find every file
    missing (the scan) or write the snapshot on its own disk (the copy): the folder's manifest is there wherever
    the chunk runs, since the flow read it (the landing folder) or wrote it (the snapshot) before."""
    if not os.path.isfile(os.path.join(folder, MANIFEST_NAME)):
        raise BatchError(
            f"{role} {folder} is not visible on {socket.gethostname()}, where a chunk of the ingest runs: workers"
            " must see the landing folder and FLYWHEEL_HOME at the same paths as the flow (a shared filesystem)"
        )


def _scan_rows(chunk: ManifestChunk, source: Path) -> ScanPart:
    _refuse_unseen(source, "the landing folder")
    rows_in, accepted, rejected, files = 0, 0, [], bytearray()
    for outcome, paths in iter_manifest_with_paths(chunk.text, source, first_line=chunk.first_line):
        rows_in += 1
        if isinstance(outcome, QuarantineRecord):
            rejected.append(outcome)
            continue
        accepted += 1
        for field in _file_fields(outcome):
            sha = _hash_if_readable(paths[field])
            if sha is not None:
                files += f"{field}:{outcome[field]}:{sha}".encode()
    return ScanPart(rows_in, accepted, rejected, bytes(files))


def _file_fields(row: dict) -> Iterator[str]:
    """The row's file fields, after dropping `<field>_sha256` keys a manifest may carry (they are the lake's own)."""
    for field in FILE_FIELDS:
        row.pop(f"{field}_sha256", None)
        if row.get(field) is not None:
            yield field


class _ScanFold:
    """The chunks' scans folded, in chunk order, into the batch's: the id hashes the manifest and every existing
    file it names (in manifest order), whatever the chunks."""

    def __init__(self, data: bytes) -> None:
        self.digest = hashlib.sha256(data)
        self.rows_in, self.accepted, self.rejected, self.chunk_sha256 = 0, 0, [], []

    def add(self, part: ScanPart) -> bytes:
        """Fold in the next chunk's scan; returns the sha256 of what its files add to the id."""
        self.digest.update(part.files)
        self.chunk_sha256.append(hashlib.sha256(part.files).digest())
        self.rows_in, self.accepted = self.rows_in + part.rows_in, self.accepted + part.accepted
        self.rejected.extend(part.rejected)
        return self.chunk_sha256[-1]

    def result(self, origin: str) -> _Scan:
        _refuse_unreadable_manifest(origin, self.accepted, self.rejected)
        return _Scan(self.digest.hexdigest()[:16], self.rows_in, self.accepted, self.rejected, tuple(self.chunk_sha256))


def _scan_batch(source: Path, data: bytes, lines: int, origin: str | None = None,
                map_chunks: ChunkMapper | None = None) -> _Scan:
    """Rows are parsed and their files hashed a chunk of `lines` lines at a time: memory does not grow with the
    batch. `origin` names the batch in error messages when `source` is a local copy of a remote one."""
    fold = _ScanFold(data)
    for part in (map_chunks or map_in_order)(scan_manifest_chunk, manifest_chunks(data, lines), source):
        fold.add(part)
    return fold.result(origin or str(source))


def compute_batch_id(source: Path) -> str:
    """Content hash of the manifest and of every existing file it names (in manifest order)."""
    data = _read_manifest(source)
    return _scan_batch(source, data, chunk_lines(data, workers=1)).batch_id


def _copy_and_hash(path: str, target: str, made: set[str]) -> str:
    """Copy the bytes of `path` (never a link) to `target`, returning the sha256 of what was copied.
    `made`: folders this pass created already (a mkdir per file costs more than the copy of a small one)."""
    digest = hashlib.sha256()
    folder = os.path.dirname(target)
    if folder not in made:
        os.makedirs(folder, exist_ok=True)
        made.add(folder)
    with open(path, "rb") as source, open(target, "wb") as copy:
        while chunk := source.read(_CHUNK):
            digest.update(chunk)
            copy.write(chunk)
    return digest.hexdigest()


def _changed(before: os.stat_result, after: os.stat_result) -> bool:
    """Whether a file was written or replaced between two stats (what rsync compares, plus the inode)."""
    return (before.st_ino, before.st_size, before.st_mtime_ns) != (after.st_ino, after.st_size, after.st_mtime_ns)


def _copy_checked(path: str, target: str, made: set[str]) -> str | None:
    """`_copy_and_hash`, for a regular file the source holds unchanged until its copy is done; None for a file
    that is missing, not a regular file (a FIFO is never opened) or unreadable. A file written or replaced while
    it was copied (an upload still running) stops the ingest: its snapshot would hold a mix of two versions."""
    try:
        before = os.stat(path)
        if not stat.S_ISREG(before.st_mode):
            return None
        sha = _copy_and_hash(path, target, made)
        after = os.stat(path)
    except OSError:  # unreadable, or vanished meanwhile
        return None
    if _changed(before, after):
        raise BatchError(
            f"{path} changed while it was ingested (written or replaced during its copy); nothing was ingested:"
            " retry once the upload is complete"
        )
    return sha


def _copy_files(staging: str, row: dict, paths: dict[str, str], files: bytearray, made: set[str], prefix: str) -> None:
    """Copy the row's files (`paths`, as the manifest pass resolved them inside the batch, under `prefix`) to the
    same place under `staging` (paths normalised), setting `<field>_sha256` from the bytes copied and adding to
    `files` what the scan would (ScanPart.files); a missing or unreadable file gets None and clean quarantines it
    as missing_file."""
    for field in _file_fields(row):
        path = paths[field]
        relative = path[len(prefix):] if path.startswith(prefix) else None  # None: the batch folder itself
        sha = _copy_checked(path, os.path.join(staging, relative), made) if relative else None
        row[f"{field}_sha256"] = sha
        if sha is not None:
            files += f"{field}:{row[field]}:{sha}".encode()
            row[field] = relative if os.sep == "/" else Path(relative).as_posix()


def copy_manifest_chunk(chunk: ManifestChunk, source: Path, staging: Path) -> CopyPart:
    """Copy the files of the chunk's rows into `staging` and give back its lines of `rows.jsonl` (a top-level
    function, so a Dask worker can run it)."""
    with steady_allocation():
        return _copy_rows(chunk, source, staging)


def _copy_rows(chunk: ManifestChunk, source: Path, staging: Path) -> CopyPart:
    _refuse_unseen(source, "the landing folder")
    _refuse_unseen(staging, "the lake's snapshot folder")
    files = bytearray()
    made: set[str] = set()  # the snapshot's folders this chunk created so far
    prefix = os.path.realpath(source).rstrip(os.sep) + os.sep  # the batch folder as resolve_inside checks paths in it
    rows: list[str] = []
    rows_in, accepted, rejected = 0, 0, []
    for outcome, paths in iter_manifest_with_paths(chunk.text, source, first_line=chunk.first_line):
        rows_in += 1
        if isinstance(outcome, QuarantineRecord):
            rejected.append(outcome)
            continue
        accepted += 1
        _copy_files(str(staging), outcome, paths, files, made, prefix)
        rows.append(json.dumps(outcome, default=str, ensure_ascii=False) + "\n")
    return CopyPart("".join(rows).encode("utf-8"), ScanPart(rows_in, accepted, rejected, bytes(files)))


def _write_snapshot(source: Path, data: bytes, staging: Path, lines: int, origin: str,
                    map_chunks: ChunkMapper | None = None, scanned: _Scan | None = None) -> _Scan:
    """Manifest, files and `rows.jsonl` into `staging`, a chunk of `lines` lines at a time; returns the scan of
    the bytes copied. With `scanned` (a scan made before, with the same chunks), the bytes copied must be the
    bytes scanned."""
    (staging / MANIFEST_NAME).write_bytes(data)
    fold = _ScanFold(data)
    expected = iter(scanned.chunk_sha256) if scanned is not None else None
    with (staging / ROWS_NAME).open("wb") as rows:
        parts = (map_chunks or map_in_order)(copy_manifest_chunk, manifest_chunks(data, lines), source, staging)
        try:
            for part in parts:
                copied = fold.add(part.scan)
                if expected is not None and copied != next(expected, None):  # the scan's chunks are these
                    raise BatchError(
                        f"{source} changed while it was ingested (a file was written, replaced or removed between"
                        " the hash and the copy); nothing was ingested: retry once the upload is complete"
                    )
                rows.write(part.rows)
        finally:
            # Closed here, before the caller removes `staging`: a mapper stopped early lets the chunks it started
            # end first (the Dask mapper waits for them), so none writes into a folder already removed
            close = getattr(parts, "close", None)
            if close is not None:
                close()
    return fold.result(origin)


def _inside_prefix(relative: Any) -> str | None:
    """A manifest path as a key under the batch prefix (posix rules, no links on an object store), or None if it leaves it."""
    if not isinstance(relative, str) or not relative or relative.startswith("/"):
        return None
    key = posixpath.normpath(relative)
    return None if key in (".", "..") or key.startswith("../") else key


def _fetch_manifest(fs: fsspec.AbstractFileSystem, root: str, uri: str) -> bytes:
    try:
        return fs.cat_file(f"{root}/{MANIFEST_NAME}")
    except FileNotFoundError as err:
        raise BatchError(
            f"{uri} is not a landing batch: {MANIFEST_NAME} is missing; expected a UTF-8 JSON Lines file"
            " with one sample object per line beside the files it names"
        ) from err
    except Exception as err:  # unreachable endpoint, bad credentials: whatever the filesystem's client raises
        raise BatchError(f"cannot read {MANIFEST_NAME} of {uri}: {type(err).__name__}: {err}") from err


def _fetch_file(fs: fsspec.AbstractFileSystem, root: str, key: str, landing: Path, uri: str) -> None:
    """Copy `root/key` to `landing/key`; a file that is absent, or that no local folder could hold, is left
    out for clean to quarantine as missing_file."""
    target = landing / key
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        local = target.open("xb")
    except OSError:  # an object store may hold both "a" and "a/b.png", or a name too long for a local disk
        return
    try:
        with local, fs.open(f"{root}/{key}", "rb") as remote:
            shutil.copyfileobj(remote, local, _CHUNK)
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        target.unlink()
    except Exception as err:  # a transient outage must not become a batch of missing files
        raise BatchError(f"cannot copy {key} of {uri}: {type(err).__name__}: {err}; nothing was ingested") from err


def _download_batch(fs: fsspec.AbstractFileSystem, root: str, uri: str, landing: Path) -> None:
    """The manifest and every file its well-formed rows name, from `root` on `fs` into the local `landing` folder.

    Paths are checked before anything is read, so nothing outside `root` is opened; rows with
    unsafe paths are quarantined by the local ingest that follows.
    """
    root = root.rstrip("/")
    data = _fetch_manifest(fs, root, uri)
    (landing / MANIFEST_NAME).write_bytes(data)
    keys = {  # the same row checks as a local batch, on an empty folder
        _inside_prefix(row.get(field))
        for row in iter_manifest(data, landing) if not isinstance(row, QuarantineRecord)
        for field in FILE_FIELDS if row.get(field) is not None
    }
    for key in sorted(keys - {None}):
        _fetch_file(fs, root, key, landing, uri)


def _open_filesystem(uri: str, storage_options: dict[str, Any] | None) -> tuple[fsspec.AbstractFileSystem, str]:
    try:
        return fsspec.core.url_to_fs(uri, **(storage_options or {}))
    except (ImportError, ValueError, TypeError) as err:  # unknown protocol, its package missing, a bad option
        raise BatchError(
            f"cannot open {uri}: {err}; accepted: a local folder or an fsspec URL whose protocol is installed"
            " (file://, memory://, s3:// with s3fs)"
        ) from err


def ingest_batch(source: Path | str, lake_raw: Path, storage_options: dict[str, Any] | None = None,
                 map_chunks: ChunkMapper | None = None, workers: int = 1) -> IngestResult:
    """Copy the batch's manifest rows and files into `lake_raw/<batch_id>/`; a known batch is skipped.

    `source` is a local folder (a Path or a plain path string) or an fsspec URI such as
    `s3://landing/batch-001`; `storage_options` go to its filesystem (for MinIO:
    `{"endpoint_url": ..., "key": ..., "secret": ...}`). `_SUCCESS.json` records a URI as given.

    Rows with unreadable lines, missing fields or unsafe paths are quarantined; a batch with no
    manifest, or whose manifest holds no JSON object at all, or a URI that cannot be opened or
    read raises BatchError. An empty manifest is an empty batch (0 rows), which validation later
    rejects as a whole.

    `map_chunks` spreads the chunks of manifest lines over `workers` workers (`ChunkMapper`; default: one
    after the other in this thread); the batch id and the snapshot are the same either way.
    """
    if isinstance(source, Path):
        return _ingest_folder(source, lake_raw, str(source.resolve()), map_chunks=map_chunks, workers=workers)
    fs, root = _open_filesystem(source, storage_options)
    if isinstance(fs, LocalFileSystem):
        folder = Path(root)
        return _ingest_folder(folder, lake_raw, source if "://" in source else str(folder.resolve()),
                              map_chunks=map_chunks, workers=workers)
    lake_raw.mkdir(parents=True, exist_ok=True)
    return _ingest_remote(fs, root, source, lake_raw, map_chunks, workers)


@retry_transient("copy a landing batch from its object store")
def _ingest_remote(fs: fsspec.AbstractFileSystem, root: str, uri: str, lake_raw: Path,
                   map_chunks: ChunkMapper | None = None, workers: int = 1) -> IngestResult:
    """Download into a fresh local landing folder (inside the lake, where workers that share it see it too) and
    ingest it; an unreachable store (BatchError raised from a connection error) is tried again from scratch,
    never from a half-downloaded folder."""
    with tempfile.TemporaryDirectory(dir=lake_raw, prefix=work_name("landing")) as landing:
        _download_batch(fs, root, uri, Path(landing))
        return _ingest_folder(Path(landing), lake_raw, uri, origin=uri, map_chunks=map_chunks, workers=workers)


def _manifest_in_lake(lake_raw: Path, data: bytes) -> bool:
    """Whether a snapshot in the lake has this manifest, byte for byte (a stat per snapshot, a read only of a
    manifest of the same size)."""
    if not lake_raw.is_dir():
        return False
    for entry in os.scandir(lake_raw):
        if entry.name.startswith("."):  # work in progress, locks
            continue
        manifest = os.path.join(entry.path, MANIFEST_NAME)
        try:
            if os.stat(manifest).st_size == len(data):
                with open(manifest, "rb") as handle:
                    if handle.read() == data:
                        return True
        except OSError:  # not a snapshot, or removed meanwhile
            continue
    return False


def _known(final: Path, scan: _Scan) -> IngestResult:
    """The result for a batch already in the lake: skipped, with the rows its snapshot kept."""
    with (final / ROWS_NAME).open("rb") as stored:
        kept = sum(1 for line in stored if line.strip())
    return IngestResult(scan.batch_id, final, StageReport("ingest", scan.rows_in, kept, scan.rejected, skipped=True))


def _ingest_folder(source: Path, lake_raw: Path, recorded_source: str, origin: str | None = None,
                   map_chunks: ChunkMapper | None = None, workers: int = 1) -> IngestResult:
    data = _read_manifest(source)
    origin, lines = origin or str(source), chunk_lines(data, workers)  # the scan and the copy cut the same chunks
    scan = _scan_batch(source, data, lines, origin, map_chunks) if _manifest_in_lake(lake_raw, data) else None
    if scan is not None and (lake_raw / scan.batch_id / DONE_NAME).is_file():
        return _known(lake_raw / scan.batch_id, scan)  # no lock needed: a published snapshot never changes
    # A new manifest is copied before its id is known: into a staging folder named for no batch
    staging = make_staging_dir(lake_raw / ("incoming" if scan is None else scan.batch_id))
    try:
        copied = _write_snapshot(source, data, staging, lines, origin, map_chunks, scan)
        final = lake_raw / copied.batch_id
        with ingest_lock(lake_raw, copied.batch_id):  # a concurrent ingest of the same bytes publishes it once
            if (final / DONE_NAME).is_file():
                shutil.rmtree(staging)
                return _known(final, copied)
            save_json(staging / DONE_NAME,
                      {"batch_id": copied.batch_id, "source": recorded_source, "rows": copied.accepted})
            publish_directory(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return IngestResult(copied.batch_id, final, StageReport("ingest", copied.rows_in, copied.accepted, copied.rejected))


def list_ingested_batches(lake_raw: Path) -> list[str]:
    """Batch ids in the lake, oldest first."""
    # Dot-folders are work in progress (a staging snapshot holds _SUCCESS.json just before its publish).
    done = [p for p in lake_raw.glob(f"*/{DONE_NAME}") if not p.parent.name.startswith(".")] if lake_raw.exists() else []
    return [p.parent.name for p in sorted(done, key=lambda p: p.stat().st_mtime)]
