"""Transform: per-sample tabular features (image, audio and caption statistics) for the feature store.

These are the columns drift monitoring watches and that training sets join by sample id.
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import soundfile as sf
from PIL import Image

from features.clean_row import column_objects, is_arrow_text, rows_as_objects
from features.memory import table_allocation
from models.fbank import ClipGroups

# Centre-of-mass columns avoid "_x"/"_y" suffixes: Feast 0.67 duckdb retrieval drops such columns as join leftovers.
IMAGE_FEATURES = ("img_mean", "img_ink_ratio", "img_center_col", "img_center_row", "img_sharpness", "img_contrast")
AUDIO_FEATURES = ("aud_seconds", "aud_rms_db", "aud_peak", "aud_silence_ratio", "aud_centroid_hz", "aud_pitch_hz")
CAPTION_FEATURES = ("cap_chars", "cap_words", "cap_letter_share")
NUMERIC_FEATURES: tuple[str, ...] = IMAGE_FEATURES + AUDIO_FEATURES + CAPTION_FEATURES
# `language` is what the manifest declares, `cap_script` the writing system the caption's letters are in
# (it moves when captions arrive in another script, whatever the manifest declares); neither knows the task.
CATEGORICAL_FEATURES: tuple[str, ...] = ("language", "cap_script")
NO_SCRIPT = "none"  # a caption without a single letter (numerals, punctuation, emoji)


def letter_script(ch: str) -> str:
    """The Unicode script of a letter, as the first word of its character name: LATIN, CYRILLIC, GREEK,
    ARABIC, HEBREW, DEVANAGARI, HANGUL, HIRAGANA, KATAKANA, CJK (Han ideographs), …"""
    return unicodedata.name(ch, "UNKNOWN").split(" ", 1)[0]


def caption_script(caption: str) -> str:
    """The script most of the caption's letters are written in (the earliest on ties); NO_SCRIPT without letters."""
    scripts = Counter(letter_script(ch) for ch in caption if ch.isalpha())
    return scripts.most_common(1)[0][0] if scripts else NO_SCRIPT


def caption_stats(caption: str) -> dict[str, object]:
    """Length in characters and words, the share of characters that are letters, and the script."""
    return {
        "cap_chars": float(len(caption)),
        "cap_words": float(len(caption.split())),
        "cap_letter_share": sum(ch.isalpha() for ch in caption) / len(caption) if caption else 0.0,
        "cap_script": caption_script(caption),
    }


def image_stats(pixels: np.ndarray) -> dict[str, float]:
    """Intensity, ink share, centre of mass (0..1 of width/height) and sharpness (mean gradient)."""
    x = pixels.astype(np.float32) / 255.0
    mass = x.sum()
    rows, cols = np.indices(x.shape)
    com_y = float((rows * x).sum() / mass / max(x.shape[0] - 1, 1)) if mass else 0.5
    com_x = float((cols * x).sum() / mass / max(x.shape[1] - 1, 1)) if mass else 0.5
    grad_y, grad_x = np.gradient(x)
    return {
        "img_mean": float(x.mean()),
        "img_ink_ratio": float((x > 0.5).mean()),
        "img_center_col": com_x,
        "img_center_row": com_y,
        "img_sharpness": float(np.hypot(grad_x, grad_y).mean()),
        "img_contrast": float(x.std()),
    }


def image_stats_batch(pixels: np.ndarray) -> dict[str, np.ndarray]:
    """`image_stats` of N images of one shape at once ((N, H, W) uint8 → one (N,) array per statistic):
    the clean stage describes a chunk's small images in one pass of whole-array operations. Equal to the
    per-image values within float32 rounding (the sums run in another order)."""
    x = pixels.astype(np.float32) / 255.0
    height, width = x.shape[1:]
    mass = x.sum(axis=(1, 2))
    rows, cols = np.indices((height, width))
    weight = np.where(mass > 0, mass, 1)  # an all-black image has no centre: 0.5, as image_stats says
    com_y = np.where(mass > 0, (rows * x).sum(axis=(1, 2)) / weight / max(height - 1, 1), 0.5)
    com_x = np.where(mass > 0, (cols * x).sum(axis=(1, 2)) / weight / max(width - 1, 1), 0.5)
    grad_y, grad_x = np.gradient(x, axis=(1, 2))
    return {
        "img_mean": x.mean(axis=(1, 2)),
        "img_ink_ratio": (x > 0.5).mean(axis=(1, 2)),
        "img_center_col": com_x,
        "img_center_row": com_y,
        "img_sharpness": np.hypot(grad_x, grad_y).mean(axis=(1, 2)),
        "img_contrast": x.std(axis=(1, 2)),
    }


class ImageStatsBatcher:
    """Collects a chunk's grayscale images by shape and fills their statistics into the rows' stats records
    `rows` images at a time; an image over `max_pixels` is described alone, so a group stays small."""

    def __init__(self, rows: int = 256, max_pixels: int = 256 * 256) -> None:
        self.rows, self.max_pixels = rows, max_pixels
        self._groups: dict[tuple[int, ...], list[tuple[dict[str, object], np.ndarray]]] = {}

    def add(self, record: dict[str, object], gray: np.ndarray) -> None:
        if gray.size > self.max_pixels or min(gray.shape) < 2:  # np.gradient needs 2 pixels a side: say so alone
            record.update(image_stats(gray))
            return
        group = self._groups.setdefault(gray.shape, [])
        group.append((record, gray))
        if len(group) == self.rows:
            self._flush(gray.shape)

    def finish(self) -> None:
        for shape in list(self._groups):
            self._flush(shape)

    def _flush(self, shape: tuple[int, ...]) -> None:
        group = self._groups.pop(shape)
        values = image_stats_batch(np.stack([gray for _, gray in group]))
        for i, (record, _) in enumerate(group):
            record.update({name: float(column[i]) for name, column in values.items()})


SILENCE_FRAME_SECONDS = 0.02  # the silence share's frames (non-overlapping)
PITCH_FRAME_SECONDS, PITCH_HOP_SECONDS = 0.04, 0.02  # the spectral frames of the centroid and the pitch
PITCH_RANGE_HZ = (60.0, 400.0)
AUDIO_STATS_FRAMES = 256  # spectral frames analysed at once (about 5 one-second clips): a group that stays in the
# CPU caches; one clip at a time took 1.4x as long, 40 clips at a time 2.2x


def _silence_ratio(wave: np.ndarray, sample_rate: int) -> float:
    """The share of 20 ms frames whose RMS is below -30 dB of full scale (the clip is peak-normalised)."""
    frame = max(int(SILENCE_FRAME_SECONDS * sample_rate), 1)
    usable = len(wave) // frame * frame
    frames = wave[:usable].reshape(-1, frame) if usable else wave[None, :]
    energy = np.sqrt((frames**2).mean(axis=1))
    return float((energy < 10 ** (-30 / 20)).mean())


def _silence_ratios(waves: list[np.ndarray], sample_rate: int) -> np.ndarray:
    """`_silence_ratio` of several clips, their whole frames judged together (each frame's mean as alone)."""
    frame = max(int(SILENCE_FRAME_SECONDS * sample_rate), 1)
    counts = np.array([len(wave) // frame for wave in waves])
    whole = [wave[: n * frame].reshape(-1, frame) for wave, n in zip(waves, counts) if n]
    quiet = np.sqrt((np.concatenate(whole) ** 2).mean(axis=1)) < 10 ** (-30 / 20) if whole else np.zeros(0, bool)
    clip = np.repeat(np.arange(len(waves)), counts)  # each frame's clip
    ratios = np.bincount(clip, weights=quiet, minlength=len(waves)).astype(np.float64) / np.maximum(counts, 1)
    for i in np.flatnonzero(counts == 0):  # shorter than a frame: the clip is its one frame
        ratios[i] = _silence_ratio(waves[i], sample_rate)
    return ratios


def pitch_frame_count(n_samples: int, sample_rate: int) -> int:
    """How many 40 ms frames, every 20 ms, a clip of `n_samples` holds (none when it is shorter than one)."""
    frame, hop = int(PITCH_FRAME_SECONDS * sample_rate), int(PITCH_HOP_SECONDS * sample_rate)
    return 0 if n_samples < frame else 1 + (n_samples - frame) // hop


def audio_stats_batch(waves: list[np.ndarray], sample_rate: int) -> dict[str, np.ndarray]:
    """`audio_stats` of several normalised clips at once: one (N,) array per statistic. Every clip's 40 ms
    frames (Hann window, every 20 ms) go through one FFT together, which gives both the spectral centroid
    and, for the voiced frames, the autocorrelation of the pitch; a clip's values do not depend on the
    clips analysed beside it.

    - aud_silence_ratio: share of 20 ms frames below -30 dB of full scale.
    - aud_centroid_hz: the magnitude-weighted mean frequency of the frames' spectra summed over the clip
      (a clip shorter than one frame: of its own spectrum).
    - aud_pitch_hz: median fundamental over voiced frames by normalised autocorrelation; NaN if unvoiced.
      A frame counts as voiced when it is within 30 dB of the clip's loudest frame and its autocorrelation
      peak in the 60-400 Hz lag range reaches 0.3 of the zero-lag value.
    """
    if not waves:
        return {name: np.empty(0) for name in ("aud_silence_ratio", "aud_centroid_hz", "aud_pitch_hz")}
    from scipy import fft  # 0.6 s to import: only where a clip is analysed, not in every run's start-up

    frame, hop = int(PITCH_FRAME_SECONDS * sample_rate), int(PITCH_HOP_SECONDS * sample_rate)
    fmin, fmax = PITCH_RANGE_HZ
    lo, hi = int(sample_rate / fmax), min(int(sample_rate / fmin), frame - 1)
    # Zero-padded past frame + hi samples, the circular autocorrelation equals the linear one at every lag
    # the pitch looks at; a length the FFT factors well.
    n_fft = fft.next_fast_len(frame + hi, real=True)
    counts = [pitch_frame_count(len(wave), sample_rate) for wave in waves]
    sizes = np.maximum(counts, 1)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    window = np.hanning(frame)
    # Every clip's frames, windowed straight into one zero-padded (F, n_fft) float64 array that the FFT may
    # overwrite: padding a separate array of frames (what rfft(n=...) does) cost as much as the FFT itself
    padded = np.zeros((int(sizes.sum()), n_fft))
    for wave, n, start in zip(waves, counts, starts):
        if n:
            np.multiply(np.lib.stride_tricks.sliding_window_view(wave, frame)[::hop], window,
                        out=padded[start : start + n, :frame])
        else:  # a clip shorter than a frame is one frame, unwindowed
            padded[start, : len(wave)] = wave
    windowed = padded[:, :frame]
    energy = np.einsum("ij,ij->i", windowed, windowed)
    del windowed
    spectrum = fft.rfft(padded, axis=1, overwrite_x=True)  # (F, n_fft // 2 + 1) of every clip's frames
    del padded
    magnitude = np.abs(spectrum)
    del spectrum
    summed = np.add.reduceat(magnitude, starts, axis=0)  # (N, bins): each clip's frames' spectra summed
    total = summed.sum(axis=1)
    centroid = np.divide(summed @ np.fft.rfftfreq(n_fft, 1.0 / sample_rate), total, out=np.zeros(len(waves)),
                         where=total > 0)
    # The pitch: the voiced frames (of clips a frame long or more) of every clip, their autocorrelations at once
    loudest = np.repeat(np.maximum.reduceat(energy, starts), sizes)
    voiced = np.flatnonzero((energy >= loudest * 10 ** (-30 / 10)) & np.repeat(np.asarray(counts) > 0, sizes))
    autocorr = fft.irfft(np.square(magnitude[voiced]), n=n_fft, axis=1)[:, :hi]
    del magnitude
    lags = lo + autocorr[:, lo:hi].argmax(axis=1)
    strength = autocorr[np.arange(len(lags)), lags] / np.maximum(autocorr[:, 0], 1e-12)
    pitched = strength >= 0.3
    f0, clip_of = sample_rate / lags[pitched], np.searchsorted(starts, voiced[pitched], side="right") - 1
    bounds = np.searchsorted(clip_of, np.arange(len(waves) + 1))  # f0 of clip i: f0[bounds[i]:bounds[i + 1]]
    pitch = np.array([np.median(f0[bounds[i] : bounds[i + 1]]) if bounds[i + 1] > bounds[i] else np.nan
                      for i in range(len(waves))])
    silence = _silence_ratios(waves, sample_rate)
    return {"aud_silence_ratio": silence, "aud_centroid_hz": centroid, "aud_pitch_hz": pitch}


def audio_stats(wave: np.ndarray, sample_rate: int) -> dict[str, float]:
    """Silence share, spectral centroid and pitch of one normalised clip (`audio_stats_batch`)."""
    return {name: float(values[0]) for name, values in audio_stats_batch([wave], sample_rate).items()}


def estimate_pitch(wave: np.ndarray, sample_rate: int) -> float:
    """Median fundamental frequency of a clip over its voiced 40 ms frames; NaN if unvoiced (`audio_stats_batch`)."""
    return audio_stats(wave, sample_rate)["aud_pitch_hz"]


class AudioStatsBatcher(ClipGroups):
    """Collects clips and fills their statistics into the rows' stats records `AUDIO_STATS_FRAMES` spectral
    frames at a time (`audio_stats_batch`); clips of another sample rate start a group of their own."""

    def __init__(self, max_frames: int = AUDIO_STATS_FRAMES) -> None:
        super().__init__(max_frames)

    def frames_of(self, n_samples: int, sample_rate: int) -> int:
        return max(pitch_frame_count(n_samples, sample_rate), 1)

    def analyse(self, records: list[dict[str, object]], waves: list[np.ndarray], sample_rate: int) -> None:
        values = audio_stats_batch(waves, sample_rate)
        for i, record in enumerate(records):
            record.update({name: float(column[i]) for name, column in values.items()})

    def finish(self) -> None:
        self.flush()


FEATURE_COLUMNS: tuple[str, ...] = ("sample_id", "event_timestamp", "batch_id", *NUMERIC_FEATURES, *CATEGORICAL_FEATURES)
_CHUNK_ROWS = 4096  # rows whose working columns (or, reading files back, per-row dicts) exist at once
# In a clean batch folder: what `sample_stats` gave for each of its rows. Named for the statistics' definition:
# a folder cleaned when the centroid was the whole clip's (before issue 17: `stats.parquet`) is read back and
# described again, so one batch's features never mix two definitions.
STATS_FILE = "stats-v2.parquet"
# The statistics computed from a sample's decoded arrays; the other features come from the clean table's columns.
ARRAY_STATS: tuple[str, ...] = (*IMAGE_FEATURES, "aud_silence_ratio", "aud_centroid_hz", "aud_pitch_hz")


def sample_stats(gray: np.ndarray | None, wave: np.ndarray | None, sample_rate: int | None) -> dict[str, float]:
    """The image statistics of a grayscale (luma) image and the audio ones of a clean clip; NaN where absent.
    For a clean folder without statistics, on its files read back; the clean stage computes the same values
    from the arrays it has just decoded, a group of rows at a time (ImageStatsBatcher, AudioStatsBatcher)."""
    stats = dict.fromkeys(ARRAY_STATS, np.nan)
    if gray is not None:
        stats.update(image_stats(gray))
    if wave is not None:
        stats.update(audio_stats(wave, sample_rate))
    return stats


def stats_frame(records: list[dict[str, object]]) -> pd.DataFrame:
    """`sample_stats` records (with their sample_id) as a table of float64 columns, also when empty."""
    frame = pd.DataFrame(records, columns=["sample_id", *ARRAY_STATS])
    frame[list(ARRAY_STATS)] = frame[list(ARRAY_STATS)].astype(float)
    frame["sample_id"] = frame["sample_id"].astype(object)
    return frame


def _sample_record(clean_dir: Path, row, batch_id: str) -> dict[str, object]:
    """One row's features, its files read back (a clean folder without statistics)."""
    record: dict[str, object] = dict.fromkeys(NUMERIC_FEATURES, np.nan) | {"cap_script": None}
    record.update(sample_id=row.sample_id, event_timestamp=row.captured_at, batch_id=batch_id, language=row.language)
    gray = wave = rate = None
    if row.image:
        with Image.open(clean_dir / row.image) as image:  # an RGB image is judged by its luma
            gray = np.asarray(image.convert("L"))
    if row.audio:
        wave, rate = sf.read(str(clean_dir / row.audio), dtype="float32")
    stats = sample_stats(gray, wave, rate)
    record.update({name: value for name, value in stats.items()
                   if (row.image if name.startswith("img_") else row.audio)})
    if row.audio:
        record.update(aud_seconds=row.audio_seconds, aud_rms_db=row.audio_rms_db, aud_peak=row.audio_peak)
    if row.caption:
        record.update(caption_stats(row.caption))
    return record


def _arrow_ids(ids: Any) -> Any:
    """Sample ids Arrow-backed: a few bytes an id in Arrow's buffers, where a Python string costs about 60 (6 MB
    at 100k rows). Ids Arrow-backed already (the clean table's) share its immutable buffers: a new array object
    (pandas' shallow copy), so that setting a value in one table leaves the other as it is."""
    import pyarrow as pa

    if isinstance(ids, pd.arrays.ArrowExtensionArray) and ids.dtype == pd.ArrowDtype(pa.string()):
        return ids.copy()
    return pd.array(pa.array(ids, pa.string()), dtype=pd.ArrowDtype(pa.string()))


def _feature_frame(data: list[dict[str, object]]) -> pd.DataFrame:
    """Per-row records as the feature table: UTC timestamps, float32 statistics, the sample ids Arrow-backed."""
    frame = pd.DataFrame(data, columns=list(FEATURE_COLUMNS))
    frame["sample_id"] = _arrow_ids(frame["sample_id"])
    frame["event_timestamp"] = pd.to_datetime(frame["event_timestamp"], utc=True)
    wider = [name for name in NUMERIC_FEATURES if frame[name].dtype != np.float32]  # columns come as float32
    if wider:
        frame[wider] = frame[wider].astype("float32")
    return frame


def _clean_stats(clean_dir: Path, rows: pd.DataFrame) -> tuple[Any, np.ndarray] | None:
    """Clean's statistics file (an open `pyarrow.parquet.ParquetFile`, read a column at a time) and where each of
    `rows` is in it; None when the folder has none for some row (a folder an older flywheel cleaned): then every
    row's files are read back. Ids are matched on Arrow arrays (a hash of the compact column), not on a pandas
    index of Python strings."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    try:
        stats = pq.ParquetFile(clean_dir / STATS_FILE)
    except FileNotFoundError:
        return None
    wanted = pa.array(rows["sample_id"], pa.string())  # Arrow-backed: the column's own buffers
    at = pc.index_in(wanted, value_set=stats.read(columns=["sample_id"])["sample_id"].cast(pa.string()))
    if at.null_count:
        stats.close()
        return None
    return stats, at.to_numpy()


def _present(column: pd.Series) -> np.ndarray:
    """Where a row has the value: a non-empty path or caption (None or <NA>, and "" have none; NaN-free object
    columns and Arrow-backed ones alike). An Arrow-backed text column is judged in Arrow, without making a
    Python string of each value (7 MB of them for a path column at 100k rows)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if is_arrow_text(column):
        has = pc.fill_null(pc.greater(pc.utf8_length(pa.array(column)), 0), False)
        return np.asarray(has.to_numpy(zero_copy_only=False), dtype=bool)
    return column_objects(column).astype(bool)


def _caption_columns(captions: pd.Series, numeric: dict[str, np.ndarray]) -> np.ndarray:
    """`caption_stats` written into the feature table's float32 columns `numeric` (NaN stays without a caption);
    returns the script column (None without one). Each distinct caption is described once, as captions repeat
    (templates, class names)."""
    present = _present(captions)
    codes, distinct = pd.factorize(captions if present.all() else captions[present])  # no copy when all have one
    described = [caption_stats(caption) for caption in distinct]
    for name in ("cap_chars", "cap_words", "cap_letter_share"):
        numeric[name][present] = np.array([entry[name] for entry in described], np.float32)[codes]
    script = np.full(len(captions), None, object)
    script[present] = np.array([entry["cap_script"] for entry in described], object)[codes]
    return script


def _features_from_stats(rows: pd.DataFrame, stats: Any, at: np.ndarray, batch_id: str) -> pd.DataFrame:
    """The feature table built a column at a time from the clean table and clean's statistics file (row i's are
    at `at[i]`; no per-row records): a statistic is kept where the row has its modality, NaN elsewhere.

    The numeric features are one float32 block, NaN at first and filled a column at a time, which becomes the
    table's block as it is (pandas would otherwise stack separate columns into a second copy): at 100k rows the
    stage's peak is the table and one float64 statistic, not the table twice."""
    has = {"img_": _present(rows["image"]), "aud_": _present(rows["audio"])}
    block = np.full((len(NUMERIC_FEATURES), len(rows)), np.nan, np.float32)
    numeric = dict(zip(NUMERIC_FEATURES, block))  # each a view of its row of the block
    for name in ARRAY_STATS:
        where = has[name[:4]]
        numeric[name][where] = stats.read(columns=[name])[name].to_numpy()[at[where]]
    for name, source in (("aud_seconds", "audio_seconds"), ("aud_rms_db", "audio_rms_db"), ("aud_peak", "audio_peak")):
        numeric[name][has["aud_"]] = rows[source].to_numpy(np.float64)[has["aud_"]]
    script = _caption_columns(rows["caption"], numeric)
    frame = pd.DataFrame(block.T, columns=list(NUMERIC_FEATURES), copy=False)  # the block itself (its transpose's)
    batch_ids = np.empty(len(rows), object)
    batch_ids.fill(batch_id)  # one string shared by every row: np.full makes one per row (5 MB at 100k rows)
    for position, (name, values) in enumerate((("sample_id", _arrow_ids(rows["sample_id"].array)),
                                          ("event_timestamp", pd.to_datetime(rows["captured_at"], utc=True).array),
                                          ("batch_id", batch_ids))):
        frame.insert(position, name, values)
    frame["language"] = column_objects(rows["language"])
    frame["cap_script"] = script
    return frame


@table_allocation()  # the working columns, each unmapped when freed
def compute_sample_features(clean_dir: Path, rows: pd.DataFrame, batch_id: str) -> pd.DataFrame:
    """One row per clean sample: entity `sample_id`, `event_timestamp` = captured_at, then the stats.

    The image and audio statistics come from the clean stage's `STATS_FILE` (computed from the arrays it
    decoded), taken a column at a time for the whole table (no chunks to join: the table exists once, plus
    one working column). Without it (a folder an older flywheel cleaned) each row's files are read back, in
    chunks of rows, so memory holds the feature table's chunks and one chunk's per-row records.
    """
    found = _clean_stats(clean_dir, rows) if len(rows) else None
    if found is not None:
        stats, at = found
        with stats:
            features = _features_from_stats(rows, stats, at, batch_id)
        del found, at
    else:
        frames = [_feature_frame([_sample_record(clean_dir, row, batch_id)
                                  for row in rows_as_objects(rows.iloc[start : start + _CHUNK_ROWS]).itertuples(index=False)])
                  for start in range(0, len(rows), _CHUNK_ROWS)]
        features = pd.concat(frames, ignore_index=True) if frames else _feature_frame([])
        del frames
    return features
