"""Clean: decode and normalise every file of a raw batch; quarantine rows with bad values, missing,
unsafe, oversized or corrupt files, and duplicate or near-duplicate samples.

Output per batch (`lake/clean/<batch_id>/`): PNGs (grayscale, or RGB for a task with 3 image
channels), 16 kHz mono WAVs, sensor `.npy` files and `rows.parquet`, the clean-rows table that validation and transform read.
Each file is decoded once: from the arrays just decoded, clean also computes what the transform stage needs,
`stats.parquet` (per-sample image and audio statistics) and `inputs/` (the model inputs by chunk, see
models.inputs), so no later stage opens an image or a clip again.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from features.clean_row import CLEAN_COLUMNS, SENSOR_FIELDS, CleanParams, clean_row, output_stem, rows_to_frame
from features.decode import DecodeError
from features.ingest import ROWS_NAME as RAW_ROWS_NAME
from features.atomic import make_staging_dir, publish_directory
from features.io import save_parquet
from features.manifest import FILE_FIELDS
from features.phash import NearHashIndex
from features.records import BatchError, QuarantineRecord, StageReport
from features.transform import STATS_FILE, ImageStatsBatcher, sample_stats, stats_frame
from models.inputs import CLEAN_INPUTS_DIR, InputSpec, InputsBuilder, write_clean_inputs_part, write_clean_inputs_spec

__all__ = [  # one row's cleaning lives in features.clean_row; these names are imported from here too
    "CLEAN_COLUMNS", "ROWS_NAME", "Chunk", "ChunkOutcome", "CleanParams", "CleanResult", "clean_batch",
    "clean_row", "clean_rows_chunk", "output_stem", "rows_to_frame",
]

ROWS_NAME = "rows.parquet"


@dataclass(frozen=True)
class CleanResult:
    batch_dir: Path
    rows: pd.DataFrame
    report: StageReport


def _digest(parts: tuple[Any, ...]) -> bytes:
    """16 bytes standing for a tuple of file hashes and caption: the dedup indexes stay small per row."""
    return hashlib.blake2b(json.dumps(parts, ensure_ascii=False).encode(), digest_size=16).digest()


def _content_key(row: dict[str, Any]) -> tuple[Any, ...]:
    return (*(row.get(f"{f}_sha256") for f in FILE_FIELDS), row.get("caption"))


def _content_besides_image(row: dict[str, Any]) -> bytes:
    """What must be identical for two rows with look-alike images to be one sample: other files' bytes, caption."""
    return _digest((*(row.get(f"{f}_sha256") for f in FILE_FIELDS if f != "image"), row.get("caption")))


class DuplicateFilter:
    """Keeps the first occurrence of each sample_id and of each content; a later one gets a record pointing
    at the kept row. Remembers an id and a 16-byte digest per kept row, not the rows."""

    def __init__(self) -> None:
        self._ids: set[str] = set()
        self._contents: dict[bytes, str] = {}

    def check(self, row: dict[str, Any]) -> QuarantineRecord | None:
        sid, key = row["sample_id"], _content_key(row)
        if sid in self._ids:
            return QuarantineRecord(sid, "clean", "duplicate_sample", f"sample_id {sid!r} already seen", row)
        digest = _digest(key) if any(part is not None for part in key) else None
        if digest is not None and digest in self._contents:
            return QuarantineRecord(
                sid, "clean", "duplicate_sample", f"same content as kept sample {self._contents[digest]!r}", row
            )
        self._ids.add(sid)
        if digest is not None:
            self._contents[digest] = sid
        return None


@dataclass(frozen=True)
class DecodedRow:
    """What clean needs to know of a decoded row after its chunk is done (not the row itself)."""

    line: int  # its line in the raw rows file: the final table keeps that (manifest) order
    sample_id: str
    image_dhash: int | None
    near_key: bytes  # _content_besides_image of the raw row
    outputs: tuple[str, ...]  # files written for it under the clean batch folder


def find_near_duplicates(decoded: list[DecodedRow], max_bits: int) -> tuple[list[DecodedRow], dict[int, str]]:
    """The rows to keep, and why each other one goes, by line: a row is a near duplicate of an earlier
    kept row when its image's dHash is within `max_bits` and its other content (audio, sensors, caption)
    is identical. Samples sharing one image but differing in speech or caption are all kept."""
    index = NearHashIndex(max_bits)
    kept: list[DecodedRow] = []
    dropped: dict[int, str] = {}
    for row in decoded:
        match = None if row.image_dhash is None else index.find(row.near_key, row.image_dhash)
        if match is None:
            if row.image_dhash is not None:
                index.add(row.near_key, row.image_dhash, row.sample_id)
            kept.append(row)
            continue
        kept_id, distance = match
        dropped[row.line] = (f"image is {distance} bit(s) from kept sample {kept_id!r}'s (dHash, limit {max_bits}),"
                             " and its audio, sensors and caption are identical (or absent in both)")
    return kept, dropped


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
    decoded: list[DecodedRow]
    quarantined: list[QuarantineRecord]


# Runs `clean_rows_chunk` over the chunks and returns their outcomes in chunk order: the default
# uses local threads; the Prefect flow passes one that maps chunks as tasks on its task runner
# (threads by default, a Dask cluster when configured).
ChunkMapper = Callable[[list[Chunk], Path, Path, CleanParams], list[ChunkOutcome]]
CHUNK_ROWS = 256  # fewest rows per unit of parallel work: amortises per-task overhead
MAX_CHUNK_ROWS = 4096  # most rows per unit: bounds what one worker holds, however large the batch
CHUNKS_PER_WORKER = 2  # batches between those sizes are cut into this many chunks per worker
PARTS_DIR = ".parts"  # the chunks' tables, inside the staging folder until they are joined
CLEAN_INPUTS_ROWS = 256  # rows per part of the model inputs clean writes: 256 x ~22 KB of arrays per worker at most


class _ChunkDerived:
    """What clean derives from each row it has just decoded, for the later stages: the transform's
    statistics (a table part per chunk) and the model inputs (parts of CLEAN_INPUTS_ROWS rows)."""

    def __init__(self, index: int, out_dir: Path, spec: InputSpec | None) -> None:
        self.index, self.out_dir, self.spec, self.parts = index, out_dir, spec, 0
        self.stats: list[dict[str, Any]] = []
        self.images = ImageStatsBatcher()  # image statistics a group of same-shape images at a time
        self.builder = None if spec is None else InputsBuilder(CLEAN_INPUTS_ROWS, spec)

    def add(self, clean: dict[str, Any], decoded: dict[str, Any]) -> None:
        wave, rate = decoded.get("wave"), decoded.get("sample_rate")
        self.stats.append({"sample_id": clean["sample_id"], **sample_stats(None, wave, rate)})
        if decoded.get("gray") is not None:
            self.images.add(self.stats[-1], decoded["gray"])
        if self.builder is not None:
            self.builder.add(clean["sample_id"], clean["caption"], decoded.get("image"), wave, rate,
                             decoded.get("sensors"))
            if self.builder.full:  # a worker holds one part's arrays, whatever the chunk's length
                self._write_inputs()
                self.builder = InputsBuilder(CLEAN_INPUTS_ROWS, self.spec)

    def finish(self) -> None:
        self.images.finish()
        save_parquet(self.out_dir / PARTS_DIR / f"stats-{self.index:05d}.parquet", stats_frame(self.stats))
        if self.builder is not None and (len(self.builder) or not self.parts):
            self._write_inputs()

    def _write_inputs(self) -> None:
        write_clean_inputs_part(self.out_dir / CLEAN_INPUTS_DIR, f"{self.index:05d}-{self.parts:04d}",
                                self.builder.build())
        self.parts += 1


def clean_rows_chunk(chunk: Chunk, raw_dir: Path, out_dir: Path, params: CleanParams) -> ChunkOutcome:
    """Clean one chunk's rows and write its part of the clean table, and of what the later stages need
    (a top-level function, so process and Dask workers can run it); returns what the batch-level steps
    need, not the rows."""
    records: list[dict[str, Any]] = []
    derived = _ChunkDerived(chunk.index, out_dir, params.inputs)
    outcome = ChunkOutcome([], [])
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
                outcome.quarantined.append(QuarantineRecord(row["sample_id"], "clean", err.reason, err.detail, row))
                continue
            records.append(clean)
            derived.add(clean, decoded)
            outputs = tuple(clean[f] for f in ("image", "audio", *SENSOR_FIELDS) if clean.get(f))
            dhash = None if clean["image_dhash"] is None else int(clean["image_dhash"], 16)
            outcome.decoded.append(DecodedRow(line, clean["sample_id"], dhash, _content_besides_image(row), outputs))
    save_parquet(out_dir / PARTS_DIR / f"part-{chunk.index:05d}.parquet", rows_to_frame(records))
    derived.finish()
    return outcome


def map_chunks_with_threads(chunks: list[Chunk], raw_dir: Path, out_dir: Path, params: CleanParams) -> list[ChunkOutcome]:
    with ThreadPoolExecutor(max_workers=params.workers) as pool:
        return list(pool.map(lambda chunk: clean_rows_chunk(chunk, raw_dir, out_dir, params), chunks))


def plan_chunks(rows_path: Path, params: CleanParams) -> tuple[list[Chunk], list[QuarantineRecord], int]:
    """One streaming pass over the raw rows: exact duplicates are quarantined here (they need every earlier
    row), and the rest is cut into chunks by line. Returns the chunks, those records and the row count."""
    with rows_path.open("rb") as handle:
        total = sum(1 for text in handle if text.strip())
    size = min(MAX_CHUNK_ROWS, max(CHUNK_ROWS, -(-total // (CHUNKS_PER_WORKER * params.workers))))
    duplicates, rejected = DuplicateFilter(), []
    chunks: list[Chunk] = []
    start = offset = position = rows = 0
    skip: set[int] = set()
    with rows_path.open("rb") as handle:
        for line, text in enumerate(handle):
            if text.strip():
                record = duplicates.check(json.loads(text))
                if record is not None:
                    rejected.append(record)
                    skip.add(line)
                rows += 1
            position += len(text)
            if rows == size:
                chunks.append(Chunk(len(chunks), start, offset, line + 1 - start, frozenset(skip)))
                start, offset, rows, skip = line + 1, position, 0, set()
        if rows:
            chunks.append(Chunk(len(chunks), start, offset, line + 1 - start, frozenset(skip)))
    return chunks, rejected, total


def _quarantine_near_duplicates(
    rows_path: Path, staging: Path, decoded: list[DecodedRow], max_bits: int
) -> tuple[set[str], list[QuarantineRecord]]:
    """Remove near duplicates' outputs; their records carry the raw row, read back by line."""
    kept, dropped = find_near_duplicates(decoded, max_bits)
    if not dropped:
        return {row.sample_id for row in kept}, []
    for row in decoded:
        if row.line in dropped:
            for output in row.outputs:
                (staging / output).unlink(missing_ok=True)
    records = []
    with rows_path.open("rb") as handle:
        for line, text in enumerate(handle):
            if line in dropped:
                raw = json.loads(text)
                records.append(QuarantineRecord(raw["sample_id"], "clean", "near_duplicate", dropped[line], raw))
    return {row.sample_id for row in kept}, records


def _join_parts(staging: Path, keep: set[str], prefix: str = "part",
                empty: Callable[[], pd.DataFrame] = lambda: rows_to_frame([])) -> pd.DataFrame:
    """The chunks' tables in chunk order, as one Arrow table converted once (no per-part frames to concatenate)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    parts = sorted((staging / PARTS_DIR).glob(f"{prefix}-*.parquet"))
    if not parts:
        return empty()
    table = pa.concat_tables([pq.read_table(part) for part in parts], promote_options="default")
    ids = table["sample_id"].cast(pa.string())  # an empty part's all-null column reads back as type null
    table = table.filter(pa.compute.is_in(ids, value_set=pa.array(sorted(keep), pa.string())))
    frame = table.to_pandas()
    return frame if len(frame) else empty()  # an empty table keeps the schema's dtypes


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
    Rows stream through in chunks: memory holds one chunk per worker, a few bytes per row for
    the duplicate indexes, and the clean table at the end.
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
        outcomes = (map_chunks or map_chunks_with_threads)(chunks, raw_dir, staging, params)
        if len(outcomes) != len(chunks):
            raise RuntimeError(f"the chunk mapper returned {len(outcomes)} outcomes for {len(chunks)} chunks")
        decoded: list[DecodedRow] = []
        for outcome in outcomes:
            decoded.extend(outcome.decoded)
            rejected.extend(outcome.quarantined)
            if progress:
                progress(len(decoded) + len(rejected), total)
        decoded.sort(key=lambda row: row.line)
        max_bits = params.near_duplicate_bits
        keep, near = (_quarantine_near_duplicates(rows_path, staging, decoded, max_bits) if max_bits >= 0
                      else ({row.sample_id for row in decoded}, []))
        rejected.extend(near)
        frame = _join_parts(staging, keep)
        save_parquet(staging / STATS_FILE, _join_parts(staging, keep, "stats", lambda: stats_frame([])))
        shutil.rmtree(staging / PARTS_DIR)
        save_parquet(staging / ROWS_NAME, frame)
        publish_directory(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return CleanResult(final, frame, StageReport("clean", total, len(frame), rejected))
