"""Model inputs per batch: the clean files turned into the arrays the towers take, stored as `.npz`.

Written by the transform stage (I/O module: it reads clean files and writes the archives),
read by training, the champion's votes and the golden-set evaluation. A batch's inputs are a
folder of shards (`part-00000.npz`, …) of at most SHARD_ROWS rows each, built and written one
at a time, so the memory the transform stage needs does not grow with the batch.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pandas as pd
import soundfile as sf
from PIL import Image

from features.atomic import atomic_path, staged_directory
from models.transforms import image_mode, image_to_input, imu_to_input, sensor_map_to_input, waveform_to_log_mel

SHARD_ROWS = 2048  # rows per shard: 2048 × (16×16 image + 100×40 log-mel + 2 × 16×16 maps + 6×160 imu) float32 ≈ 47 MB
_SHARD_GLOB = "part-*.npz"
# Input kinds (ModelInputs fields, with a has_<kind> mask each) → the model's modality names
# (models.imagebind: vision, audio, text, depth, thermal, imu); written out to keep this module torch-free.
KIND_MODALITY: dict[str, str] = {"image": "vision", "caption": "text", "audio": "audio", "depth": "depth",
                                 "thermal": "thermal", "imu": "imu"}
SENSOR_KINDS = ("depth", "thermal", "imu")  # the clean table's sensor columns (`sensors/<stem>.<kind>.npy`)
IMU_CHANNELS = 6  # 3 accelerometer + 3 gyroscope axes, as the clean stage checks


@dataclass(frozen=True)
class InputSpec:
    """The model inputs' shapes: params.yaml's `transform:` and the task's image channels (defaults and
    reasons: flows/settings.py); the sensor sizes are this module's own."""

    image_size: int  # side of the square image input
    n_mels: int  # log-mel bins
    audio_frames: int  # 10 ms frames per clip
    image_channels: int  # 1: grayscale; 3: RGB, colour kept from the file (the task's image_channels)
    depth_size: int = 16  # side of the square depth map input
    thermal_size: int = 16  # side of the square thermal map input
    imu_length: int = 160  # samples per IMU series, centre-cropped or zero-padded

    def __post_init__(self) -> None:
        if self.image_channels not in (1, 3):
            raise ValueError(f"image_channels must be 1 (grayscale) or 3 (RGB), got {self.image_channels!r}")
        sizes = {f: getattr(self, f) for f in ("image_size", "n_mels", "audio_frames", "depth_size", "thermal_size",
                                               "imu_length")}
        bad = {f: v for f, v in sizes.items() if not isinstance(v, int) or v < 1}
        if bad:
            raise ValueError(f"input sizes must be positive integers, got {bad}")

    def config_fields(self) -> dict[str, int]:
        """The `ImageBindConfig` fields these inputs fix: a model built with them takes these arrays."""
        return {"image_size": self.image_size, "image_channels": self.image_channels, "audio_n_mels": self.n_mels,
                "audio_frames": self.audio_frames, "depth_image_size": self.depth_size,
                "thermal_image_size": self.thermal_size, "imu_length": self.imu_length}


@dataclass
class ModelInputs:
    sample_id: np.ndarray  # (N,) str
    image: np.ndarray  # (N, C, S, S) float32 in [0, 1], C = 1 (grayscale) or 3 (RGB); zeros where has_image is False
    audio: np.ndarray  # (N, T, M) float32 log-mel; floor where has_audio is False
    caption: np.ndarray  # (N,) str; "" where has_caption is False
    depth: np.ndarray  # (N, 1, Sd, Sd) float32 in [0, 1], each map scaled by its range; zeros where has_depth is False
    thermal: np.ndarray  # (N, 1, St, St) float32 in [0, 1], as depth; zeros where has_thermal is False
    imu: np.ndarray  # (N, 6, L) float32 accelerometer + gyroscope series; zeros where has_imu is False
    has_image: np.ndarray  # (N,) bool
    has_audio: np.ndarray  # (N,) bool
    has_caption: np.ndarray  # (N,) bool
    has_depth: np.ndarray  # (N,) bool
    has_thermal: np.ndarray  # (N,) bool
    has_imu: np.ndarray  # (N,) bool

    def __len__(self) -> int:
        return len(self.sample_id)

    def take(self, index: np.ndarray) -> "ModelInputs":
        return ModelInputs(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    @staticmethod
    def concat(parts: list["ModelInputs"]) -> "ModelInputs":
        if not parts:
            raise ValueError("no model inputs to concatenate")
        return ModelInputs(**{f.name: np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(ModelInputs)})


def modalities_present(inputs: ModelInputs) -> tuple[str, ...]:
    """The model modalities (vision, text, audio, depth, thermal, imu) at least one row carries, in that order."""
    return tuple(modality for kind, modality in KIND_MODALITY.items() if getattr(inputs, f"has_{kind}").any())


def _sensor_path(row: object, kind: str) -> str | None:
    value = getattr(row, kind, None)  # a clean table from before sensors were kept has no such column
    return value if isinstance(value, str) and value else None


def build_model_inputs(clean_dir: Path, rows: pd.DataFrame, spec: InputSpec) -> ModelInputs:
    """Arrays for every clean row, in table order; missing modalities are masked, not dropped.

    Images are read as grayscale or RGB as `spec.image_channels` says (a grayscale file in an RGB task
    repeats its one channel; a colour file in a grayscale task is converted to luminance).
    """
    n = len(rows)
    image = np.zeros((n, spec.image_channels, spec.image_size, spec.image_size), dtype=np.float32)
    floor = float(np.log(np.finfo(np.float32).eps))
    audio = np.full((n, spec.audio_frames, spec.n_mels), floor, dtype=np.float32)
    sensors = {"depth": np.zeros((n, 1, spec.depth_size, spec.depth_size), dtype=np.float32),
               "thermal": np.zeros((n, 1, spec.thermal_size, spec.thermal_size), dtype=np.float32),
               "imu": np.zeros((n, IMU_CHANNELS, spec.imu_length), dtype=np.float32)}
    to_input = {"depth": lambda v: sensor_map_to_input(v, spec.depth_size),
                "thermal": lambda v: sensor_map_to_input(v, spec.thermal_size),
                "imu": lambda v: imu_to_input(v, spec.imu_length)}
    mode = image_mode(spec.image_channels)
    has = {kind: np.zeros(n, bool) for kind in ("image", "audio", *SENSOR_KINDS)}
    for i, row in enumerate(rows.itertuples(index=False)):
        if row.image:
            with Image.open(clean_dir / row.image) as handle:
                image[i] = image_to_input(np.asarray(handle.convert(mode)), spec.image_size)
            has["image"][i] = True
        if row.audio:
            wave, rate = sf.read(str(clean_dir / row.audio), dtype="float32")
            audio[i] = waveform_to_log_mel(wave, rate, spec.n_mels, spec.audio_frames)
            has["audio"][i] = True
        for kind in SENSOR_KINDS:
            path = _sensor_path(row, kind)
            if path is not None:
                sensors[kind][i] = to_input[kind](np.load(clean_dir / path, allow_pickle=False))
                has[kind][i] = True
    captions = np.array([c if isinstance(c, str) else "" for c in rows["caption"]], dtype=str)
    return ModelInputs(
        sample_id=np.array(rows["sample_id"], dtype=str), image=image, audio=audio, caption=captions, **sensors,
        has_caption=captions != "", **{f"has_{kind}": mask for kind, mask in has.items()},
    )


def _write_archive(path: Path, inputs: ModelInputs) -> None:
    np.savez_compressed(path, **{f.name: getattr(inputs, f.name) for f in fields(inputs)})


def save_model_inputs(path: Path, inputs: ModelInputs) -> None:
    """Atomic write of one compressed archive without pickled objects."""
    with atomic_path(path, suffix=".npz") as tmp:  # np.savez would append .npz to any other name
        _write_archive(tmp, inputs)


def save_model_input_shards(
    folder: Path,
    clean_dir: Path,
    rows: pd.DataFrame,
    spec: InputSpec,
    shard_rows: int = SHARD_ROWS,
    progress: Callable[[int, int], None] | None = None,
) -> int:
    """Build and write a batch's inputs shard by shard into `folder` (replaced whole, atomically).

    Only one shard's arrays are in memory at a time. An empty batch still gets one (empty)
    shard, so a reader can tell "no rows" from "never built". Returns the number of shards.
    """
    if shard_rows < 1:
        raise ValueError(f"shard_rows must be at least 1, got {shard_rows}")
    starts = range(0, max(len(rows), 1), shard_rows)
    with staged_directory(folder) as staging:
        for index, start in enumerate(starts):
            part = rows.iloc[start : start + shard_rows]
            _write_archive(staging / f"part-{index:05d}.npz", build_model_inputs(clean_dir, part, spec))
            if progress:
                progress(min(start + shard_rows, len(rows)), len(rows))
    return len(starts)


def _load_archive(path: Path) -> ModelInputs:
    with np.load(path, allow_pickle=False) as archive:
        missing = [f.name for f in fields(ModelInputs) if f.name not in archive.files]
        if missing:
            raise ValueError(f"model inputs at {path} lack {missing} (written before those inputs were kept): "
                             "rebuild them with the transform stage")
        return ModelInputs(**{f.name: archive[f.name] for f in fields(ModelInputs)})


def has_model_inputs(path: Path) -> bool:
    """Whether `path` is a built archive or shard folder."""
    return path.is_file() or (path.is_dir() and any(path.glob(_SHARD_GLOB)))


def iter_model_inputs(path: Path) -> Iterator[ModelInputs]:
    """The shards of a batch folder in row order (or the one archive a file is), one at a time."""
    if path.is_file():
        yield _load_archive(path)
        return
    shards = sorted(path.glob(_SHARD_GLOB))
    if not shards:
        raise FileNotFoundError(f"no model inputs at {path}: expected a .npz archive or a folder of {_SHARD_GLOB}")
    for shard in shards:
        yield _load_archive(shard)


def load_model_inputs(path: Path) -> ModelInputs:
    """All rows of an archive or of a shard folder, in row order."""
    return ModelInputs.concat(list(iter_model_inputs(path)))
