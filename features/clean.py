"""Clean: decode and normalise every file of a raw batch; quarantine rows with bad values, missing,
unsafe, oversized or corrupt files, and duplicate or near-duplicate samples.

Output per batch (`lake/clean/<batch_id>/`): grayscale PNGs, 16 kHz mono WAVs, sensor `.npy`
files and `rows.parquet`, the clean-rows table that validation and transform read.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import soundfile as sf
from PIL import Image

from features.decode import DecodeError, decode_audio, decode_image, decode_sensor
from features.ingest import ROWS_NAME as RAW_ROWS_NAME
from features.io import load_jsonl, make_staging_dir, publish_directory, save_parquet
from features.manifest import FILE_FIELDS, parse_timestamp, resolve_inside
from features.phash import NearHashIndex, compute_dhash
from features.records import BatchError, QuarantineRecord, StageReport

ROWS_NAME = "rows.parquet"
# Manifest fields with a column of their own; everything else is kept as JSON in `meta`.
KNOWN_FIELDS = ("sample_id", "captured_at", "caption", "label", "language", "voice", "source", *FILE_FIELDS)
TEXT_FIELDS = ("caption", "language", "voice", "source")
SENSOR_FIELDS = ("depth", "thermal", "imu")
# The clean-rows table, in column order; an empty batch has the same columns.
CLEAN_COLUMNS = (
    "sample_id", "captured_at", "caption", "label", "language", "voice", "source", "meta",
    "image", "image_width", "image_height", "image_contrast", "image_dhash",
    "audio", "audio_seconds", "audio_peak", "audio_rms_db", "caption_chars", *SENSOR_FIELDS,
)
INT64_RANGE = (-(2**63), 2**63 - 1)  # the label column is nullable int64
_PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


@dataclass(frozen=True)
class CleanParams:
    sample_rate: int = 16000
    max_image_pixels: int = 4_000_000
    max_audio_seconds: float = 30.0
    silence_db: float = 40.0
    workers: int = 4  # decoding threads; Pillow, soundfile and numpy release the GIL
    near_duplicate_bits: int = 4  # images whose 64-bit dHashes differ in at most this many bits match; -1: off
    max_sensor_values: int = 16_000_000  # values in one .npy sensor array, read from its header before loading

    def __post_init__(self) -> None:
        if not -1 <= self.near_duplicate_bits < 64:
            raise ValueError(f"near_duplicate_bits must be -1 (off) or 0..63, got {self.near_duplicate_bits}")
        if self.workers < 1 or self.max_sensor_values < 1:
            raise ValueError(
                f"workers and max_sensor_values must be at least 1, got {self.workers} and {self.max_sensor_values}"
            )


@dataclass(frozen=True)
class CleanResult:
    batch_dir: Path
    rows: pd.DataFrame
    report: StageReport


def _content_key(row: dict[str, Any]) -> tuple[Any, ...]:
    return (*(row.get(f"{f}_sha256") for f in FILE_FIELDS), row.get("caption"))


def _content_besides_image(row: dict[str, Any]) -> tuple[Any, ...]:
    """What must be identical for two rows with look-alike images to be one sample: other files' bytes, caption."""
    return (*(row.get(f"{f}_sha256") for f in FILE_FIELDS if f != "image"), row.get("caption"))


def find_duplicates(rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[QuarantineRecord]]:
    """Keep the first occurrence of each sample_id and of each content; later ones point at the kept row."""
    kept: list[dict[str, Any]] = []
    rejected: list[QuarantineRecord] = []
    by_id: dict[str, str] = {}
    by_content: dict[tuple[Any, ...], str] = {}
    for row in rows:
        sid, key = row["sample_id"], _content_key(row)
        if sid in by_id:
            rejected.append(QuarantineRecord(sid, "clean", "duplicate_sample", f"sample_id {sid!r} already seen", row))
        elif key in by_content and any(part is not None for part in key):
            rejected.append(
                QuarantineRecord(sid, "clean", "duplicate_sample", f"same content as kept sample {by_content[key]!r}", row)
            )
        else:
            by_id[sid] = sid
            by_content[key] = sid
            kept.append(row)
    return kept, rejected


def find_near_duplicates(
    rows: list[dict[str, Any]], image_hashes: list[int | None], max_bits: int
) -> tuple[list[int], list[QuarantineRecord]]:
    """Indices of the rows to keep, and records for the rest: a row is a near duplicate of an earlier kept
    row when its image's dHash is within `max_bits` and its other content (audio, sensors, caption) is
    identical. The demo reuses one digit image for samples with different speech: those are all kept."""
    index = NearHashIndex(max_bits)
    kept: list[int] = []
    rejected: list[QuarantineRecord] = []
    for position, (row, value) in enumerate(zip(rows, image_hashes)):
        match = None if value is None else index.find(_content_besides_image(row), value)
        if match is None:
            if value is not None:
                index.add(_content_besides_image(row), value, row["sample_id"])
            kept.append(position)
            continue
        kept_id, distance = match
        detail = (f"image is {distance} bit(s) from kept sample {kept_id!r}'s (dHash, limit {max_bits}),"
                  " and its audio, sensors and caption are identical (or absent in both)")
        rejected.append(QuarantineRecord(row["sample_id"], "clean", "near_duplicate", detail, row))
    return kept, rejected


def _label_value(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        kind = type(value).__name__
        raise DecodeError("bad_label", f"label must be an integer class or null, got {kind} {value!r:.80}")
    if not INT64_RANGE[0] <= value <= INT64_RANGE[1]:
        raise DecodeError("bad_label", "label is outside the int64 range")
    return value


def _check_text_fields(row: dict[str, Any]) -> None:
    for name in TEXT_FIELDS:
        value = row.get(name)
        if value is not None and not isinstance(value, str):
            raise DecodeError("bad_field", f"{name} must be a string or null, got {type(value).__name__} {value!r:.80}")


def _batch_file(raw_dir: Path, row: dict[str, Any], field: str) -> Path:
    """The row's file for `field`, checked again here: clean reads nothing outside the raw batch."""
    if row.get(f"{field}_sha256") is None:
        raise DecodeError("missing_file", f"{field} file {row[field]!r} does not exist in the batch or was unreadable")
    try:
        path = resolve_inside(raw_dir, row[field])
    except ValueError as err:
        raise DecodeError("unsafe_path", f"{field}: {err}") from err
    try:
        regular = path.is_file()  # a FIFO or device would block or never end: it is never opened
    except OSError:
        regular = False
    if not regular:
        raise DecodeError("missing_file", f"{field} file {row[field]!r} is not a regular file in the batch")
    return path


def output_stem(sample_id: str) -> str:
    """File name stem for a sample's outputs: the id itself when it is a plain name, else a slug plus a
    hash of the id, so that distinct ids ("a/b", "a_b") never share a file."""
    if _PLAIN_NAME.fullmatch(sample_id):
        return sample_id
    slug = re.sub(r"[^A-Za-z0-9._-]", "_", sample_id)[:40]
    return f"{slug}-{hashlib.sha256(sample_id.encode()).hexdigest()[:12]}"


def clean_row(row: dict[str, Any], raw_dir: Path, out_dir: Path, params: CleanParams) -> dict[str, Any]:
    """Check one row's values and files, decode them, write their normalised versions under `out_dir`;
    return the clean row, or raise DecodeError with the reason code."""
    sid = row["sample_id"]
    _check_text_fields(row)
    label = _label_value(row.get("label"))
    caption = row.get("caption")
    caption = caption if caption and caption.strip() else None
    if not (caption or any(row.get(f) for f in FILE_FIELDS)):
        raise DecodeError("no_modality", "the row names no image, audio, caption or sensor")
    files = {field: _batch_file(raw_dir, row, field) for field in FILE_FIELDS if row.get(field)}
    clean: dict[str, Any] = {
        "sample_id": sid,
        "captured_at": parse_timestamp(row["captured_at"]),
        "caption": caption,
        "label": label,
        "language": row.get("language"),
        "voice": row.get("voice"),
        "source": row.get("source"),
        "meta": json.dumps({k: v for k, v in row.items() if k not in KNOWN_FIELDS and not k.endswith("_sha256")}),
        "image": None, "image_width": None, "image_height": None, "image_contrast": np.nan, "image_dhash": None,
        "audio": None, "audio_seconds": np.nan, "audio_peak": np.nan, "audio_rms_db": np.nan,
        "caption_chars": len(caption) if caption else None,
        **{kind: None for kind in SENSOR_FIELDS},
    }
    try:
        _decode_files(files, out_dir, output_stem(sid), params, clean)
    except DecodeError:
        _remove_outputs(out_dir, clean)  # a row quarantined for its audio leaves no orphan image behind
        raise
    return clean


def _decode_files(files: dict[str, Path], out_dir: Path, stem: str, params: CleanParams, clean: dict[str, Any]) -> None:
    """Decode each file, write its normalised version under `out_dir` and fill its columns in `clean`."""
    if "image" in files:
        pixels = decode_image(files["image"], params.max_image_pixels)
        clean["image"] = f"images/{stem}.png"
        Image.fromarray(pixels).save(out_dir / clean["image"])
        clean["image_height"], clean["image_width"] = pixels.shape
        clean["image_contrast"] = float(pixels.std() / 255.0)
        clean["image_dhash"] = f"{compute_dhash(pixels):016x}"
    if "audio" in files:
        audio = decode_audio(files["audio"], params.sample_rate, params.max_audio_seconds, params.silence_db)
        clean["audio"] = f"audio/{stem}.wav"
        sf.write(out_dir / clean["audio"], audio.wave, audio.sample_rate, subtype="PCM_16")
        clean["audio_seconds"] = len(audio.wave) / audio.sample_rate
        clean["audio_peak"] = audio.source_peak
        clean["audio_rms_db"] = audio.source_rms_db
    for kind in SENSOR_FIELDS:
        if kind in files:
            array = decode_sensor(files[kind], kind, params.max_sensor_values)
            clean[kind] = f"sensors/{stem}.{kind}.npy"
            np.save(out_dir / clean[kind], array, allow_pickle=False)


def _remove_outputs(out_dir: Path, clean: dict[str, Any]) -> None:
    for field in ("image", "audio", *SENSOR_FIELDS):
        if clean.get(field):
            (out_dir / clean[field]).unlink(missing_ok=True)


def rows_to_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """The clean-rows table with stable dtypes (nullable integers, UTC timestamps), also when empty."""
    frame = pd.DataFrame(rows, columns=list(CLEAN_COLUMNS))
    frame["captured_at"] = pd.to_datetime(frame["captured_at"], utc=True)
    for column in ("label", "image_width", "image_height", "caption_chars"):
        frame[column] = pd.array(frame[column], dtype="Int64")
    for column in ("image_contrast", "audio_seconds", "audio_peak", "audio_rms_db"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype(float)
    return frame


Outcome = dict[str, Any] | QuarantineRecord
# Runs `clean_rows_chunk` over chunks of rows and returns the outcomes in chunk order: the
# default uses local threads; the Prefect flow passes one that maps chunks as tasks on its
# task runner (threads by default, a Dask cluster when configured).
ChunkMapper = Callable[[list[list[dict[str, Any]]], Path, Path, CleanParams], list[list[Outcome]]]
CHUNK_ROWS = 256  # fewest rows per unit of parallel work: amortises per-task overhead
CHUNKS_PER_WORKER = 2  # larger batches are cut into this many chunks per worker, not more


def clean_rows_chunk(rows: list[dict[str, Any]], raw_dir: Path, out_dir: Path, params: CleanParams) -> list[Outcome]:
    """Clean one chunk of rows (a top-level function, so process and Dask workers can run it)."""
    outcomes: list[Outcome] = []
    for row in rows:
        try:
            outcomes.append(clean_row(row, raw_dir, out_dir, params))
        except DecodeError as err:
            outcomes.append(QuarantineRecord(row["sample_id"], "clean", err.reason, err.detail, row))
    return outcomes


def map_chunks_with_threads(chunks: list[list[dict[str, Any]]], raw_dir: Path, out_dir: Path, params: CleanParams) -> list[list[Outcome]]:
    with ThreadPoolExecutor(max_workers=params.workers) as pool:
        return list(pool.map(lambda chunk: clean_rows_chunk(chunk, raw_dir, out_dir, params), chunks))


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
    """
    batch_id = raw_dir.name
    if not (raw_dir / RAW_ROWS_NAME).is_file():
        raise BatchError(
            f"{raw_dir} is not an ingested batch: {RAW_ROWS_NAME} is missing; run ingest on the landing batch first"
        )
    rows = load_jsonl(raw_dir / RAW_ROWS_NAME)
    unique, rejected = find_duplicates(rows)
    final = clean_root / batch_id
    staging = make_staging_dir(final)
    try:
        for sub in ("images", "audio", "sensors"):
            (staging / sub).mkdir()

        size = max(CHUNK_ROWS, -(-len(unique) // (CHUNKS_PER_WORKER * params.workers)))
        chunks = [unique[i : i + size] for i in range(0, len(unique), size)]
        outcomes = [o for chunk in (map_chunks or map_chunks_with_threads)(chunks, raw_dir, staging, params) for o in chunk]
        if len(outcomes) != len(unique):
            raise RuntimeError(f"the chunk mapper returned {len(outcomes)} outcomes for {len(unique)} rows")
        decoded: list[tuple[dict[str, Any], dict[str, Any]]] = []  # (raw row, clean row), in manifest order
        for done, (row, outcome) in enumerate(zip(unique, outcomes), start=1):
            if isinstance(outcome, QuarantineRecord):
                rejected.append(outcome)
            else:
                decoded.append((row, outcome))
            if progress:
                progress(done, len(unique))
        cleaned = [clean for _, clean in decoded]
        if params.near_duplicate_bits >= 0:
            hashes = [None if c["image_dhash"] is None else int(c["image_dhash"], 16) for c in cleaned]
            kept, near = find_near_duplicates([raw for raw, _ in decoded], hashes, params.near_duplicate_bits)
            for position in sorted(set(range(len(cleaned))) - set(kept)):
                _remove_outputs(staging, cleaned[position])
            cleaned = [cleaned[position] for position in kept]
            rejected.extend(near)
        frame = rows_to_frame(cleaned)
        save_parquet(staging / ROWS_NAME, frame)
        publish_directory(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return CleanResult(final, frame, StageReport("clean", len(rows), len(cleaned), rejected))
