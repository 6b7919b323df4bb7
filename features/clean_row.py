"""Clean one row: check its values, decode its files, write their normalised versions.

Images become PNGs (grayscale, or RGB when the task keeps colour), audio 16 kHz mono WAVs (trimmed, peak-normalised), sensors
`.npy` float32 arrays; `rows_to_frame` gives the clean-rows table its stable schema. The batch
level (duplicates, chunks, the table) is `features.clean`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from PIL import Image

from features.atomic import link_or_copy
from features.decode import DecodeError, decode_audio, decode_image, decode_sensor, to_grayscale
from features.manifest import FILE_FIELDS, parse_timestamp, resolved_inside
from features.phash import compute_dhash
from features.task import Task, UnknownClass
from models.inputs import InputSpec

# Manifest fields with a column of their own; everything else (the task's slice fields among them) is
# kept as JSON in `meta`, where features.task.slice_values reads it.
KNOWN_FIELDS = ("sample_id", "captured_at", "caption", "label", "language", "source", *FILE_FIELDS)
TEXT_FIELDS = ("caption", "language", "source")
SENSOR_FIELDS = ("depth", "thermal", "imu")
# The clean-rows table, in column order; an empty batch has the same columns.
CLEAN_COLUMNS = (
    "sample_id", "captured_at", "caption", "label", "language", "source", "meta",
    "image", "image_width", "image_height", "image_contrast", "image_dhash",
    "audio", "audio_seconds", "audio_peak", "audio_rms_db", "caption_chars", *SENSOR_FIELDS,
)
_PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


@dataclass(frozen=True)
class CleanParams:
    """Decoding limits of the clean stage; the values come from params.yaml's `clean:` (whose defaults and
    reasons live in flows/settings.py, declared once) and the task."""

    task: Task  # the classes a manifest label must name, and the image channels kept
    sample_rate: int
    max_image_pixels: int
    max_audio_seconds: float
    silence_db: float
    near_duplicate_bits: int  # images whose 64-bit dHashes differ in at most this many bits match; -1: off
    max_sensor_values: int  # values in one .npy sensor array, read from its header before loading
    workers: int = 4  # decoding threads; Pillow, soundfile and numpy release the GIL
    inputs: InputSpec | None = None  # the model inputs to build from the decoded arrays (decode once); None: none

    def __post_init__(self) -> None:
        if not -1 <= self.near_duplicate_bits < 64:
            raise ValueError(f"near_duplicate_bits must be -1 (off) or 0..63, got {self.near_duplicate_bits}")
        if self.workers < 1 or self.max_sensor_values < 1:
            raise ValueError(
                f"workers and max_sensor_values must be at least 1, got {self.workers} and {self.max_sensor_values}"
            )

    @property
    def image_channels(self) -> int:
        """1: images are cleaned to grayscale; 3: to RGB (the task's choice)."""
        return self.task.image_channels


def _label_index(value: Any, task: Task) -> int | None:
    """A manifest label (a class name; an integer 7 names class "7") -> its class index; None: unlabelled."""
    if value is None:
        return None
    try:
        return task.index_of(value)
    except UnknownClass as err:
        raise DecodeError("bad_label", str(err)) from None


def _check_text_fields(row: dict[str, Any]) -> None:
    for name in TEXT_FIELDS:
        value = row.get(name)
        if value is not None and not isinstance(value, str):
            raise DecodeError("bad_field", f"{name} must be a string or null, got {type(value).__name__} {value!r:.80}")


def _batch_file(raw_dir: Path, row: dict[str, Any], field: str, real_dirs: dict[str, str] | None = None) -> str:
    """The row's file for `field`, checked again here: clean reads nothing outside the raw batch. A string, not a
    Path (features.manifest.resolved_inside: a Path per file grows the interpreter's interned strings for good)."""
    if row.get(f"{field}_sha256") is None:
        raise DecodeError("missing_file", f"{field} file {row[field]!r} does not exist in the batch or was unreadable")
    try:
        path = resolved_inside(raw_dir, row[field], real_dirs)
    except ValueError as err:
        raise DecodeError("unsafe_path", f"{field}: {err}") from err
    if not os.path.isfile(path):  # a FIFO or device would block or never end: it is never opened
        raise DecodeError("missing_file", f"{field} file {row[field]!r} is not a regular file in the batch")
    return path


def output_stem(sample_id: str) -> str:
    """File name stem for a sample's outputs: the id itself when it is a plain name, else a slug plus a
    hash of the id, so that distinct ids ("a/b", "a_b") never share a file."""
    if _PLAIN_NAME.fullmatch(sample_id):
        return sample_id
    slug = re.sub(r"[^A-Za-z0-9._-]", "_", sample_id)[:40]
    return f"{slug}-{hashlib.sha256(sample_id.encode()).hexdigest()[:12]}"


def clean_row(row: dict[str, Any], raw_dir: Path, out_dir: Path, params: CleanParams,
              decoded: dict[str, Any] | None = None, real_dirs: dict[str, str] | None = None) -> dict[str, Any]:
    """Check one row's values and files, decode them, write their normalised versions under `out_dir`;
    return the clean row, or raise DecodeError with the reason code. `decoded`, when given, receives the
    arrays exactly as the written files read back ("image", "wave", "sensors"), so nothing decodes them again.
    `real_dirs`: the batch's resolved folders, shared by the calls of one pass (features.manifest.resolve_inside)."""
    sid = row["sample_id"]
    _check_text_fields(row)
    label = _label_index(row.get("label"), params.task)
    caption = row.get("caption")
    caption = caption if caption and caption.strip() else None
    if not (caption or any(row.get(f) for f in FILE_FIELDS)):
        raise DecodeError("no_modality", "the row names no image, audio, caption or sensor")
    files = {field: _batch_file(raw_dir, row, field, real_dirs) for field in FILE_FIELDS if row.get(field)}
    clean: dict[str, Any] = {
        "sample_id": sid,
        "captured_at": parse_timestamp(row["captured_at"]),
        "caption": caption,
        "label": label,
        "language": row.get("language"),
        "source": row.get("source"),
        "meta": json.dumps({k: v for k, v in row.items() if k not in KNOWN_FIELDS and not k.endswith("_sha256")}),
        "image": None, "image_width": None, "image_height": None, "image_contrast": np.nan, "image_dhash": None,
        "audio": None, "audio_seconds": np.nan, "audio_peak": np.nan, "audio_rms_db": np.nan,
        "caption_chars": len(caption) if caption else None,
        **{kind: None for kind in SENSOR_FIELDS},
    }
    try:
        _decode_files(files, out_dir, output_stem(sid), params, clean, {} if decoded is None else decoded)
    except DecodeError:
        _remove_outputs(out_dir, clean)  # a row quarantined for its audio leaves no orphan image behind
        raise
    return clean


def to_pcm16(samples: np.ndarray) -> np.ndarray:
    """float32 samples in [-1, 1] → the 16-bit PCM values a WAV holds; the conversion libsndfile makes
    (scale by 2^15, round down, clip), so arrays kept in memory equal what the file reads back."""
    return np.clip(np.floor(samples.astype(np.float32) * np.float32(32768)), -32768, 32767).astype(np.int16)


def write_pcm16_wav(path: Path | str, samples: np.ndarray, sample_rate: int) -> None:
    """A mono 16-bit PCM WAV (no per-file sync to disk: the stage publishes its folder as a whole)."""
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(sample_rate)
        handle.writeframes(samples.astype("<i2").tobytes())


def _decode_files(files: dict[str, str], out_dir: Path, stem: str, params: CleanParams, clean: dict[str, Any],
                  decoded: dict[str, Any]) -> None:
    """Decode each file, write its normalised version under `out_dir`, fill its columns in `clean` and put
    the arrays as written in `decoded`. Output paths are strings, as the input ones (`_batch_file`)."""
    out = str(out_dir)
    if "image" in files:
        image = decode_image(files["image"], params.max_image_pixels, params.image_channels)
        pixels = image.pixels  # (H, W) or (H, W, 3)
        clean["image"] = f"images/{stem}.png"
        if image.canonical:  # a PNG in the task's mode is its own clean version: linked, not encoded again
            link_or_copy(files["image"], os.path.join(out, clean["image"]))
        else:
            Image.fromarray(pixels).save(os.path.join(out, clean["image"]))
        decoded["image"] = pixels
        decoded["gray"] = gray = to_grayscale(pixels)  # contrast and dHash judge brightness, whatever the channels
        clean["image_height"], clean["image_width"] = gray.shape
        clean["image_contrast"] = float(gray.std() / 255.0)
        clean["image_dhash"] = f"{compute_dhash(gray):016x}"
    if "audio" in files:
        audio = decode_audio(files["audio"], params.sample_rate, params.max_audio_seconds, params.silence_db)
        clean["audio"] = f"audio/{stem}.wav"
        samples = to_pcm16(audio.wave)
        write_pcm16_wav(os.path.join(out, clean["audio"]), samples, audio.sample_rate)
        decoded["wave"], decoded["sample_rate"] = samples.astype(np.float32) / np.float32(32768), audio.sample_rate
        clean["audio_seconds"] = len(audio.wave) / audio.sample_rate
        clean["audio_peak"] = audio.source_peak
        clean["audio_rms_db"] = audio.source_rms_db
    for kind in SENSOR_FIELDS:
        if kind in files:
            array = decode_sensor(files[kind], kind, params.max_sensor_values)
            clean[kind] = f"sensors/{stem}.{kind}.npy"
            np.save(os.path.join(out, clean[kind]), array, allow_pickle=False)
            decoded.setdefault("sensors", {})[kind] = array


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


# Arrow's string type read as pandas' Arrow-backed strings: the values stay in Arrow's buffers.
_ARROW_TEXT = {pa.string(): pd.ArrowDtype(pa.string()), pa.large_string(): pd.ArrowDtype(pa.large_string())}


def is_arrow_text(column: pd.Series) -> bool:
    """Whether `column` is Arrow-backed text, as `clean_frame` reads it: strings or missing values only, so
    its values can be judged in Arrow without a Python object a row."""
    return isinstance(column.dtype, pd.ArrowDtype) and column.dtype.pyarrow_dtype in _ARROW_TEXT


def clean_frame(table: pa.Table) -> pd.DataFrame:
    """The clean-rows table (as written to rows.parquet) as the stages pass it on: its text columns
    Arrow-backed (`pd.ArrowDtype`), a few bytes a value in Arrow's buffers where a Python string costs
    about 60 (0.45 KB a row in all, and twice that while converting); the other columns as `rows_to_frame`
    types them. A missing text value is <NA> here: user code gets the rows through `rows_as_objects` (a
    project's stage) or as row dicts (labelling functions), where it is None. A column with no value at all
    (Parquet's null type: the sensor columns of a batch without sensors) is read as Arrow-backed text too,
    missing throughout, not as a Python None a row (24 bytes each, and copied with every filter of the table).
    `table` is consumed."""
    for index, field in enumerate(table.schema):
        if pa.types.is_null(field.type):
            table = table.set_column(index, field.name, table.column(index).cast(pa.string()))
    return table.to_pandas(types_mapper=_ARROW_TEXT.get, self_destruct=True, split_blocks=True)


def column_objects(column: pd.Series) -> np.ndarray:
    """A column's values as Python objects: an Arrow-backed column's missing values as None (where pandas
    would give <NA>), and equal values as one object, as pyarrow's conversion to object columns shares them
    (a language repeated in 100k rows is one string, not 100k); an object column's as they are."""
    if not isinstance(column.dtype, pd.ArrowDtype):
        return column.to_numpy(dtype=object)
    codes, distinct = pd.factorize(column, use_na_sentinel=True)
    values = np.empty(len(distinct) + 1, dtype=object)  # the last stands for a missing value: code -1
    values[:-1] = distinct.to_numpy(dtype=object)
    return values[codes]


def rows_as_objects(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy of `frame` with its Arrow-backed columns as Python objects, None where a value is missing:
    the clean rows as pandas reads rows.parquet and as user code receives them."""
    objects = frame.copy()
    for column, dtype in frame.dtypes.items():
        if isinstance(dtype, pd.ArrowDtype):
            objects[column] = column_objects(frame[column])
    return objects
