"""Clean: decode and normalise every file of a raw batch; quarantine missing, corrupt and duplicate rows.

Output per batch (`lake/clean/<batch_id>/`): grayscale PNGs, 16 kHz mono WAVs, sensor `.npy`
files and `rows.parquet`, the clean-rows table that validation and transform read.
"""

from __future__ import annotations

import json
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
from features.io import load_jsonl, make_staging_dir, publish_directory, save_parquet
from features.manifest import FILE_FIELDS, parse_timestamp
from features.records import QuarantineRecord, StageReport

ROWS_NAME = "rows.parquet"
# Manifest fields with a column of their own; everything else is kept as JSON in `meta`.
KNOWN_FIELDS = ("sample_id", "captured_at", "caption", "label", "language", "voice", "source", *FILE_FIELDS)


@dataclass(frozen=True)
class CleanParams:
    sample_rate: int = 16000
    max_image_pixels: int = 4_000_000
    max_audio_seconds: float = 30.0
    silence_db: float = 40.0
    workers: int = 4  # decoding threads; Pillow, soundfile and numpy release the GIL


@dataclass(frozen=True)
class CleanResult:
    batch_dir: Path
    rows: pd.DataFrame
    report: StageReport


def _content_key(row: dict[str, Any]) -> tuple[Any, ...]:
    return (*(row.get(f"{f}_sha256") for f in FILE_FIELDS), row.get("caption"))


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


def _label_value(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or float(value) != int(value):
        raise DecodeError("missing_field", f"label must be an integer class or null, got {value!r}")
    return int(value)


def clean_row(row: dict[str, Any], raw_dir: Path, out_dir: Path, params: CleanParams) -> dict[str, Any]:
    """Decode one row's files, write their normalised versions under `out_dir`, return the clean row."""
    sid = row["sample_id"]
    if not any(row.get(f) for f in ("image", "audio", "caption", "depth", "thermal", "imu")):
        raise DecodeError("no_modality", "the row names no image, audio, caption or sensor")
    for field in FILE_FIELDS:
        if row.get(field) is not None and row.get(f"{field}_sha256") is None:
            raise DecodeError("missing_file", f"{field} file {row[field]!r} does not exist in the batch")
    caption = row.get("caption")
    clean: dict[str, Any] = {
        "sample_id": sid,
        "captured_at": parse_timestamp(row["captured_at"]),
        "caption": caption if isinstance(caption, str) and caption.strip() else None,
        "label": _label_value(row.get("label")),
        "language": row.get("language"),
        "voice": row.get("voice"),
        "source": row.get("source"),
        "meta": json.dumps({k: v for k, v in row.items() if k not in KNOWN_FIELDS and not k.endswith("_sha256")}),
        "image": None, "image_width": None, "image_height": None, "image_contrast": np.nan,
        "audio": None, "audio_seconds": np.nan, "audio_peak": np.nan, "audio_rms_db": np.nan,
    }
    clean["caption_chars"] = len(clean["caption"]) if clean["caption"] else None
    safe = sid.replace("/", "_")
    if row.get("image"):
        pixels = decode_image(raw_dir / row["image"], params.max_image_pixels)
        clean["image"] = f"images/{safe}.png"
        Image.fromarray(pixels).save(out_dir / clean["image"])
        clean["image_height"], clean["image_width"] = pixels.shape
        clean["image_contrast"] = float(pixels.std() / 255.0)
    if row.get("audio"):
        audio = decode_audio(raw_dir / row["audio"], params.sample_rate, params.max_audio_seconds, params.silence_db)
        clean["audio"] = f"audio/{safe}.wav"
        sf.write(out_dir / clean["audio"], audio.wave, audio.sample_rate, subtype="PCM_16")
        clean["audio_seconds"] = len(audio.wave) / audio.sample_rate
        clean["audio_peak"] = audio.source_peak
        clean["audio_rms_db"] = audio.source_rms_db
    for kind in ("depth", "thermal", "imu"):
        clean[kind] = None
        if row.get(kind):
            array = decode_sensor(raw_dir / row[kind], kind)
            clean[kind] = f"sensors/{safe}.{kind}.npy"
            np.save(out_dir / clean[kind], array, allow_pickle=False)
    return clean


def rows_to_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """The clean-rows table with stable dtypes (nullable integers, UTC timestamps), also when empty."""
    frame = pd.DataFrame(rows, columns=None if rows else [*KNOWN_FIELDS, "meta"])
    frame["captured_at"] = pd.to_datetime(frame["captured_at"], utc=True)
    for column in ("label", "image_width", "image_height", "caption_chars"):
        frame[column] = pd.array(frame.get(column, pd.Series([None] * len(frame))), dtype="Int64")
    for column in ("image_contrast", "audio_seconds", "audio_peak", "audio_rms_db"):
        frame[column] = pd.to_numeric(frame.get(column, pd.Series([np.nan] * len(frame))), errors="coerce").astype(float)
    return frame


def clean_batch(
    raw_dir: Path, clean_root: Path, params: CleanParams, progress: Callable[[int, int], None] | None = None
) -> CleanResult:
    """Decode every row of a raw batch in parallel; returns the clean table and the quarantine."""
    batch_id = raw_dir.name
    rows = load_jsonl(raw_dir / "rows.jsonl")
    unique, rejected = find_duplicates(rows)
    final = clean_root / batch_id
    staging = make_staging_dir(final)
    try:
        for sub in ("images", "audio", "sensors"):
            (staging / sub).mkdir()

        def work(row: dict[str, Any]) -> dict[str, Any] | QuarantineRecord:
            try:
                return clean_row(row, raw_dir, staging, params)
            except DecodeError as err:
                return QuarantineRecord(row["sample_id"], "clean", err.reason, err.detail, row)

        cleaned: list[dict[str, Any]] = []
        with ThreadPoolExecutor(max_workers=params.workers) as pool:
            for done, outcome in enumerate(pool.map(work, unique), start=1):
                if isinstance(outcome, QuarantineRecord):
                    rejected.append(outcome)
                else:
                    cleaned.append(outcome)
                if progress:
                    progress(done, len(unique))
        frame = rows_to_frame(cleaned)
        save_parquet(staging / ROWS_NAME, frame)
        publish_directory(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return CleanResult(final, frame, StageReport("clean", len(rows), len(cleaned), rejected))


def load_clean_rows(clean_dir: Path) -> pd.DataFrame:
    return pd.read_parquet(clean_dir / ROWS_NAME)
