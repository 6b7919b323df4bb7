"""Clean: decode and normalise every file of a raw batch; quarantine rows with bad values, missing,
unsafe, oversized or corrupt files, and duplicate or near-duplicate samples.

Output per batch (`lake/clean/<batch_id>/`): PNGs (grayscale, or RGB for a task with 3 image
channels), 16 kHz mono WAVs, sensor `.npy` files and `rows.parquet`, the clean-rows table that validation and transform read.
Each file is decoded once: from the arrays just decoded, clean also computes what the transform stage needs,
`stats-v2.parquet` (per-sample image and audio statistics) and `inputs/` (the model inputs by chunk, see
models.inputs), so no later stage opens an image or a clip again.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from features.clean_row import (
    CLEAN_COLUMNS, SENSOR_FIELDS, CleanParams, clean_frame, clean_row, output_stem, rows_as_objects, rows_to_frame,
)
from features.decode import DecodeError
from features.ingest import ROWS_NAME as RAW_ROWS_NAME
from features.atomic import make_staging_dir, publish_directory
from features.io import save_parquet, save_table
from features.manifest import FILE_FIELDS
from features.memory import steady_allocation, table_allocation
from features.phash import find_near_matches
from features.records import BatchError, QuarantineRecord, StageReport
from features.transform import ARRAY_STATS, STATS_FILE, AudioStatsBatcher, ImageStatsBatcher, stats_frame
from models.inputs import CLEAN_INPUTS_DIR, InputSpec, InputsBuilder, write_clean_inputs_part, write_clean_inputs_spec

__all__ = [  # one row's cleaning lives in features.clean_row; these names are imported from here too
    "CLEAN_COLUMNS", "ROWS_NAME", "Chunk", "ChunkOutcome", "CleanParams", "CleanResult", "clean_batch",
    "clean_frame", "clean_row", "clean_rows_chunk", "output_stem", "rows_as_objects", "rows_to_frame",
]

ROWS_NAME = "rows.parquet"


@dataclass(frozen=True)
class CleanResult:
    batch_dir: Path
    rows: pd.DataFrame  # the clean-rows table, its text columns Arrow-backed (clean_frame)
    report: StageReport


def _digest(parts: tuple[Any, ...]) -> bytes:
    """16 bytes standing for a tuple of file hashes and caption: the dedup indexes stay small per row."""
    return hashlib.blake2b(json.dumps(parts, ensure_ascii=False).encode(), digest_size=16).digest()


def _content_key(row: dict[str, Any]) -> tuple[Any, ...]:
    return (*(row.get(f"{f}_sha256") for f in FILE_FIELDS), row.get("caption"))


def _content_besides_image(row: dict[str, Any]) -> bytes:
    """What must be identical for two rows with look-alike images to be one sample: other files' bytes, caption."""
    return _digest((*(row.get(f"{f}_sha256") for f in FILE_FIELDS if f != "image"), row.get("caption")))


def _row_digests(rows_path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per non-blank line of the raw rows file: its line number, a 16-byte digest of its sample_id and of its
    content (file hashes and caption), and whether it has content. Packed arrays, no per-row objects."""
    lines, ids, contents, has_content = [], bytearray(), bytearray(), bytearray()
    with rows_path.open("rb") as handle:
        for line, text in enumerate(handle):
            if not text.strip():
                continue
            row = json.loads(text)
            key = _content_key(row)
            lines.append(line)
            ids += _digest((row["sample_id"],))
            contents += _digest(key)
            has_content.append(any(part is not None for part in key))
    return (np.array(lines, np.int64), np.frombuffer(bytes(ids), "S16"), np.frombuffer(bytes(contents), "S16"),
            np.frombuffer(bytes(has_content), np.bool_))


def _repeated(values: np.ndarray) -> np.ndarray:
    """Where a value occurs more than once in `values`."""
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    return counts[inverse] > 1


def find_exact_duplicates(rows_path: Path) -> dict[int, tuple[str, int | None]]:
    """Lines of the raw rows file to quarantine as duplicates: a row whose sample_id or content (file hashes
    and caption) an earlier *kept* row has. Returns {line: ("id", None) or ("content", kept line)}.

    Rows are compared by 16-byte digests held in arrays; only rows sharing a digest with another row are
    walked one by one (a row whose id and content are both unique can clash with none)."""
    lines, ids, contents, has_content = _row_digests(rows_path)
    suspect = _repeated(ids)
    if has_content.any():
        suspect[has_content] |= _repeated(contents[has_content])
    seen_ids: set[bytes] = set()
    kept_contents: dict[bytes, int] = {}
    duplicates: dict[int, tuple[str, int | None]] = {}
    for at in np.flatnonzero(suspect):  # in line order, as the rows arrive
        line, sid, content = int(lines[at]), ids[at].tobytes(), contents[at].tobytes()
        if sid in seen_ids:
            duplicates[line] = ("id", None)
        elif has_content[at] and content in kept_contents:
            duplicates[line] = ("content", kept_contents[content])
        else:
            seen_ids.add(sid)
            if has_content[at]:
                kept_contents[content] = line
    return duplicates


@dataclass(frozen=True)
class DecodedRows:
    """What clean needs to know of a chunk's decoded rows after the chunk is done, as columns (no per-row
    objects): the near-duplicate search over the whole batch reads them."""

    lines: np.ndarray  # (N,) int64: each row's line in the raw rows file (the final table keeps that order)
    sample_ids: pa.Array  # (N,) string
    image_dhashes: np.ndarray  # (N,) uint64; 0 where the row has no image
    has_image: np.ndarray  # (N,) bool
    near_keys: np.ndarray  # (N,) S16: _content_besides_image of the raw row

    @classmethod
    def concat(cls, parts: list[DecodedRows]) -> DecodedRows:
        """The parts as one, in line order."""
        if not parts:
            return cls(np.zeros(0, np.int64), pa.array([], pa.string()), np.zeros(0, np.uint64),
                       np.zeros(0, bool), np.zeros(0, "S16"))
        lines = np.concatenate([part.lines for part in parts])
        order = np.argsort(lines, kind="stable")
        return cls(lines[order], pa.concat_arrays([part.sample_ids for part in parts]).take(order),
                   np.concatenate([part.image_dhashes for part in parts])[order],
                   np.concatenate([part.has_image for part in parts])[order],
                   np.concatenate([part.near_keys for part in parts])[order])

    def __len__(self) -> int:
        return len(self.lines)


def find_near_duplicates(decoded: DecodedRows, max_bits: int) -> dict[int, tuple[str, str]]:
    """The rows to drop, by line, with their sample_id and why: a row is a near duplicate of an earlier
    kept row when its image's dHash is within `max_bits` and its other content (audio, sensors, caption)
    is identical. Samples sharing one image but differing in speech or caption are all kept."""
    with_image = np.flatnonzero(decoded.has_image)
    _, keys = np.unique(decoded.near_keys[with_image], return_inverse=True)
    match, distance = find_near_matches(keys.ravel(), decoded.image_dhashes[with_image], max_bits)
    dropped: dict[int, tuple[str, str]] = {}
    for at in np.flatnonzero(match >= 0):
        row, kept = with_image[at], with_image[match[at]]
        kept_id = decoded.sample_ids[kept].as_py()
        dropped[int(decoded.lines[row])] = (
            decoded.sample_ids[row].as_py(),
            f"image is {int(distance[at])} bit(s) from kept sample {kept_id!r}'s (dHash, limit {max_bits}),"
            " and its audio, sensors and caption are identical (or absent in both)")
    return dropped


@dataclass(frozen=True)
class Chunk:
    """A run of lines of the raw rows file; whoever cleans it (a thread, a process, a Dask worker) reads them."""

    index: int  # names its part of the clean table: parts/part-<index>.parquet
    first_line: int  # 0-based line of the raw rows file where it starts
    offset: int  # byte offset of that line
    lines: int  # lines it spans, duplicates included
    skip: frozenset[int]  # lines (absolute) already quarantined as duplicates


@dataclass
class ChunkOutcome:
    decoded: DecodedRows
    quarantined: list[QuarantineRecord]


# Runs `clean_rows_chunk` over the chunks and returns their outcomes in chunk order: the default
# uses local threads; the Prefect flow passes one that maps chunks as tasks on its task runner
# (threads by default, a Dask cluster when configured).
ChunkMapper = Callable[[list[Chunk], Path, Path, CleanParams], list[ChunkOutcome]]
CHUNK_ROWS = 256  # fewest rows per unit of parallel work: amortises per-task overhead
MAX_CHUNK_ROWS = 4096  # most rows per unit: bounds what one worker holds, however large the batch
CHUNKS_PER_WORKER = 2  # batches between those sizes are cut into this many chunks per worker
PARTS_DIR = ".parts"  # the chunks' tables, inside the staging folder until they are joined
# Rows per part a chunk writes (clean table, statistics, model inputs): what one worker holds at most,
# 256 x ~22 KB of model-input arrays plus the rows' records, however long its chunk.
PART_ROWS = 256


class _ChunkWriter:
    """What clean writes for the rows of a chunk it has just decoded, PART_ROWS rows at a time, so a worker
    holds one part whatever the chunk's length: the rows' part of the clean table, the transform's
    statistics and the model inputs."""

    def __init__(self, index: int, out_dir: Path, spec: InputSpec | None) -> None:
        self.index, self.out_dir, self.spec, self.parts = index, out_dir, spec, 0
        self.records: list[dict[str, Any]] = []
        self.lines: list[int] = []
        self.near_keys = bytearray()
        self.decoded: list[DecodedRows] = []  # per part written: what the batch-level steps need of its rows
        self.stats: list[dict[str, Any]] = []
        self.images = ImageStatsBatcher()  # image statistics a group of same-shape images at a time
        self.audio = AudioStatsBatcher()  # audio statistics a few clips at a time
        self.builder = None if spec is None else InputsBuilder(PART_ROWS, spec)

    def add(self, line: int, row: dict[str, Any], clean: dict[str, Any], decoded: dict[str, Any]) -> None:
        self.records.append(clean)
        self.lines.append(line)
        self.near_keys += _content_besides_image(row)
        wave, rate = decoded.get("wave"), decoded.get("sample_rate")
        self.stats.append({"sample_id": clean["sample_id"], **dict.fromkeys(ARRAY_STATS, np.nan)})  # NaN: absent
        if decoded.get("gray") is not None:
            self.images.add(self.stats[-1], decoded["gray"])
        if wave is not None:
            self.audio.add(self.stats[-1], wave, rate)
        if self.builder is not None:
            self.builder.add(clean["sample_id"], clean["caption"], decoded.get("image"), wave, rate,
                             decoded.get("sensors"))
        if len(self.records) == PART_ROWS:
            self._write_part()

    def finish(self) -> DecodedRows:
        if self.records or not self.parts:  # an empty chunk still writes its (empty) part
            self._write_part()
        return DecodedRows.concat(self.decoded)

    def _write_part(self) -> None:
        name = f"{self.index:05d}-{self.parts:04d}"  # sorted names keep the rows' order
        save_parquet(self.out_dir / PARTS_DIR / f"part-{name}.parquet", rows_to_frame(self.records))
        self.images.finish()  # every statistic of the part's rows is filled in
        self.audio.finish()
        save_parquet(self.out_dir / PARTS_DIR / f"stats-{name}.parquet", stats_frame(self.stats))
        if self.builder is not None:
            write_clean_inputs_part(self.out_dir / CLEAN_INPUTS_DIR, name, self.builder.build())
            self.builder = InputsBuilder(PART_ROWS, self.spec)
        # No Python object of a row outlives its part: kept ones, scattered among the many a row makes and
        # drops, would pin the allocator's memory and grow the process with the rows (fragmentation).
        dhashes = [record["image_dhash"] for record in self.records]
        self.decoded.append(DecodedRows(
            np.array(self.lines, np.int64), pa.array([record["sample_id"] for record in self.records], pa.string()),
            np.array([0 if value is None else int(value, 16) for value in dhashes], np.uint64),
            np.array([value is not None for value in dhashes], bool), np.frombuffer(bytes(self.near_keys), "S16")))
        self.records, self.stats, self.lines, self.near_keys = [], [], [], bytearray()
        self.parts += 1


_SCIPY_IMPORT = threading.Lock()


def _import_scipy_once() -> None:
    """Import the scipy modules decoding uses (resampling, spectra) one thread at a time: worker threads that
    import scipy at once can fail inside its package init ("cannot import name 'PytestTester' from partially
    initialized module"); once imported, the stages' lazy imports are dictionary look-ups."""
    with _SCIPY_IMPORT:
        import scipy.fft  # noqa: F401
        import scipy.signal  # noqa: F401


def clean_rows_chunk(chunk: Chunk, raw_dir: Path, out_dir: Path, params: CleanParams) -> ChunkOutcome:
    """Clean one chunk's rows and write its parts of the clean table, and of what the later stages need
    (a top-level function, so process and Dask workers can run it); returns what the batch-level steps
    need, not the rows."""
    _import_scipy_once()
    with steady_allocation():  # a Dask worker's allocator settings cost a third of its time (features.memory)
        return _clean_rows(chunk, raw_dir, out_dir, params)


def _clean_rows(chunk: Chunk, raw_dir: Path, out_dir: Path, params: CleanParams) -> ChunkOutcome:
    writer = _ChunkWriter(chunk.index, out_dir, params.inputs)
    quarantined: list[QuarantineRecord] = []
    real_dirs: dict[str, str] = {}  # the raw batch's folders, resolved once for this chunk
    with (raw_dir / RAW_ROWS_NAME).open("rb") as handle:
        handle.seek(chunk.offset)
        for line in range(chunk.first_line, chunk.first_line + chunk.lines):
            text = handle.readline()
            if line in chunk.skip or not text.strip():
                continue
            row = json.loads(text)
            decoded: dict[str, Any] = {}
            try:
                clean = clean_row(row, raw_dir, out_dir, params, decoded, real_dirs)
            except DecodeError as err:
                quarantined.append(QuarantineRecord(row["sample_id"], "clean", err.reason, err.detail, row))
                continue
            writer.add(line, row, clean, decoded)
    return ChunkOutcome(writer.finish(), quarantined)


@contextmanager
def single_threaded_blas() -> Iterator[None]:
    """numpy's BLAS on one thread while chunks decode: clean runs a chunk per CPU already, and OpenBLAS's own
    threads (one per CPU, spinning while they wait) fought the decoding threads for the cores. The log-mel's
    mel product is the one BLAS call; with two decoding threads on two cores, 2,000 demo rows took 7.1 s and
    13.3 CPU-s with OpenBLAS's threads, 4.1-6.2 s and 6.6-9.3 CPU-s with one. Process workers (Dask) already run with
    one OpenMP thread each."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        yield


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity: `taskset`, a container's cpuset), not the machine's."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def decoding_threads(params: CleanParams) -> int:
    """`params.workers`, but no more than the CPUs the process may use: a thread beyond them decodes nothing
    sooner and holds a part of its own, and its own allocator arena, which keeps what it freed (pinned to one
    core, four threads left clean's peak 45-53 MB higher at 10k rows, for the same CPU time). The chunks
    themselves (plan_chunks) do not depend on it, so neither do the outputs."""
    return min(params.workers, usable_cpus())


def map_chunks_with_threads(chunks: list[Chunk], raw_dir: Path, out_dir: Path, params: CleanParams) -> list[ChunkOutcome]:
    """`decoding_threads(params)` threads; with one, the chunks run in this thread."""
    threads = decoding_threads(params)
    if threads == 1:
        return [clean_rows_chunk(chunk, raw_dir, out_dir, params) for chunk in chunks]
    with ThreadPoolExecutor(max_workers=threads) as pool:
        return list(pool.map(lambda chunk: clean_rows_chunk(chunk, raw_dir, out_dir, params), chunks))


def plan_chunks(rows_path: Path, params: CleanParams) -> tuple[list[Chunk], list[QuarantineRecord], int]:
    """Exact duplicates are found first (they need every earlier row: find_exact_duplicates), then one
    streaming pass cuts the rest into chunks by line and reads back the duplicates' raw rows for their
    records. Returns the chunks, those records and the row count."""
    duplicates = find_exact_duplicates(rows_path)
    wanted = set(duplicates) | {kept for kind, kept in duplicates.values() if kind == "content"}
    with rows_path.open("rb") as handle:
        total = sum(1 for text in handle if text.strip())
    size = min(MAX_CHUNK_ROWS, max(CHUNK_ROWS, -(-total // (CHUNKS_PER_WORKER * params.workers))))
    ids: dict[int, str] = {}  # line -> sample_id, of the lines the records name
    rejected: list[QuarantineRecord] = []
    chunks: list[Chunk] = []
    start = offset = position = rows = 0
    skip: set[int] = set()
    with rows_path.open("rb") as handle:
        for line, text in enumerate(handle):
            if text.strip():
                if line in wanted:
                    row = json.loads(text)
                    ids[line] = sid = row["sample_id"]
                    if line in duplicates:
                        kind, kept = duplicates[line]
                        detail = (f"sample_id {sid!r} already seen" if kind == "id"
                                  else f"same content as kept sample {ids[kept]!r}")
                        rejected.append(QuarantineRecord(sid, "clean", "duplicate_sample", detail, row))
                        skip.add(line)
                rows += 1
            position += len(text)
            if rows == size:
                chunks.append(Chunk(len(chunks), start, offset, line + 1 - start, frozenset(skip)))
                start, offset, rows, skip = line + 1, position, 0, set()
        if rows:
            chunks.append(Chunk(len(chunks), start, offset, line + 1 - start, frozenset(skip)))
    return chunks, rejected, total


def _part_tables(staging: Path, prefix: str, columns: list[str] | None = None) -> list[pa.Table]:
    return [pq.read_table(part, columns=columns) for part in sorted((staging / PARTS_DIR).glob(f"{prefix}-*.parquet"))]


def _quarantine_near_duplicates(
    rows_path: Path, staging: Path, decoded: DecodedRows, max_bits: int
) -> tuple[set[str], list[QuarantineRecord]]:
    """The near duplicates' sample_ids and records; their outputs are removed (their paths read back from
    the chunks' tables), and their records carry the raw row, read back by line."""
    dropped = find_near_duplicates(decoded, max_bits)
    if not dropped:
        return set(), []
    dropped_ids = {sid for sid, _ in dropped.values()}
    outputs = ["image", "audio", *SENSOR_FIELDS]
    for table in _part_tables(staging, "part", ["sample_id", *outputs]):
        table = table.filter(pc.is_in(table["sample_id"].cast(pa.string()), value_set=pa.array(sorted(dropped_ids))))
        for field in outputs:
            for output in table[field].to_pylist():
                if output:
                    (staging / output).unlink(missing_ok=True)
    records = []
    with rows_path.open("rb") as handle:
        for line, text in enumerate(handle):
            if line in dropped:
                raw = json.loads(text)
                records.append(QuarantineRecord(raw["sample_id"], "clean", "near_duplicate", dropped[line][1], raw))
    return dropped_ids, records


def _join_parts(staging: Path, dropped: set[str], prefix: str) -> pa.Table | None:
    """The chunks' tables in chunk order less the `dropped` sample_ids, as one Arrow table (the parts'
    buffers, not copies); None when no row is left."""
    parts = _part_tables(staging, prefix)
    table = pa.concat_tables(parts, promote_options="default") if parts else None
    del parts
    if table is not None and dropped:
        ids = table["sample_id"].cast(pa.string())  # an empty part's all-null column reads back as type null
        table = table.filter(pc.invert(pc.is_in(ids, value_set=pa.array(sorted(dropped), pa.string()))))
    return table if table is not None and table.num_rows else None


def _save_joined_parts(staging: Path, dropped: set[str], prefix: str, path: Path,
                       empty: Callable[[], pd.DataFrame]) -> pa.Table | None:
    """Write the joined parts (`_join_parts`) to `path` as they are, or `empty()` when no row is left;
    returns the table written, None for an empty one."""
    table = _join_parts(staging, dropped, prefix)
    if table is None:
        save_parquet(path, empty())
    else:
        save_table(path, table)
    return table


def clean_batch(
    raw_dir: Path,
    clean_root: Path,
    params: CleanParams,
    progress: Callable[[int, int], None] | None = None,
    map_chunks: ChunkMapper | None = None,
) -> CleanResult:
    """Decode every row of a raw batch in parallel; returns the clean table and the quarantine.

    Order of checks: exact duplicates (id or bytes), then per row field types, files and decoding,
    then near-duplicate images among the rows that decoded. An empty batch gives an empty table.
    Rows stream through in chunks, written PART_ROWS at a time: memory holds one part per worker, about
    50 bytes a row of packed digests, hashes and line numbers for the duplicate checks (numpy and Arrow
    arrays, no per-row Python objects), and the clean table at the end (its text in Arrow buffers).
    """
    batch_id = raw_dir.name
    rows_path = raw_dir / RAW_ROWS_NAME
    if not rows_path.is_file():
        raise BatchError(
            f"{raw_dir} is not an ingested batch: {RAW_ROWS_NAME} is missing; run ingest on the landing batch first"
        )
    chunks, rejected, total = plan_chunks(rows_path, params)
    final = clean_root / batch_id
    staging = make_staging_dir(final)
    try:
        for sub in ("images", "audio", "sensors", PARTS_DIR, *((CLEAN_INPUTS_DIR,) if params.inputs else ())):
            (staging / sub).mkdir()
        if params.inputs is not None:
            write_clean_inputs_spec(staging / CLEAN_INPUTS_DIR, params.inputs)
        with single_threaded_blas():
            outcomes = (map_chunks or map_chunks_with_threads)(chunks, raw_dir, staging, params)
        if len(outcomes) != len(chunks):
            raise RuntimeError(f"the chunk mapper returned {len(outcomes)} outcomes for {len(chunks)} chunks")
        decoded_parts: list[DecodedRows] = []
        decoded_rows = 0
        for outcome in outcomes:
            decoded_parts.append(outcome.decoded)
            rejected.extend(outcome.quarantined)
            decoded_rows += len(outcome.decoded)
            if progress:
                progress(decoded_rows + len(rejected), total)
        decoded = DecodedRows.concat(decoded_parts)
        del outcomes, decoded_parts
        max_bits = params.near_duplicate_bits
        dropped, near = (_quarantine_near_duplicates(rows_path, staging, decoded, max_bits) if max_bits >= 0
                         else (set(), []))
        del decoded
        rejected.extend(near)
        # The batch's tables joined from the chunks' parts (features.memory); on the way out the decode buffers'
        # pages go back too, so the next stage does not start from clean's peak
        with table_allocation():
            _save_joined_parts(staging, dropped, "stats", staging / STATS_FILE, lambda: stats_frame([]))
            table = _save_joined_parts(staging, dropped, "part", staging / ROWS_NAME, lambda: rows_to_frame([]))
            # Text stays in the table's Arrow buffers (clean_frame): as Python strings it cost about 0.45 KB a
            # row, and 0.9 KB while converting, held by every later stage.
            frame = rows_to_frame([]) if table is None else clean_frame(table)
            del table
        shutil.rmtree(staging / PARTS_DIR)
        publish_directory(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return CleanResult(final, frame, StageReport("clean", total, len(frame), rejected))
