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
from models.transforms import image_to_input, waveform_to_log_mel

SHARD_ROWS = 2048  # rows per shard: 2048 × (16×16 image + 100×40 log-mel) float32 ≈ 35 MB in memory
_SHARD_GLOB = "part-*.npz"


@dataclass(frozen=True)
class InputSpec:
    image_size: int = 16  # side of the square image input
    n_mels: int = 40  # log-mel bins
    audio_frames: int = 100  # 10 ms frames per clip


@dataclass
class ModelInputs:
    sample_id: np.ndarray  # (N,) str
    image: np.ndarray  # (N, 1, S, S) float32; zeros where has_image is False
    audio: np.ndarray  # (N, T, M) float32 log-mel; floor where has_audio is False
    caption: np.ndarray  # (N,) str; "" where has_caption is False
    voice: np.ndarray  # (N,) str; "" when unknown (for per-voice slices)
    has_image: np.ndarray  # (N,) bool
    has_audio: np.ndarray  # (N,) bool
    has_caption: np.ndarray  # (N,) bool

    def __len__(self) -> int:
        return len(self.sample_id)

    def take(self, index: np.ndarray) -> "ModelInputs":
        return ModelInputs(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    @staticmethod
    def concat(parts: list["ModelInputs"]) -> "ModelInputs":
        if not parts:
            raise ValueError("no model inputs to concatenate")
        return ModelInputs(**{f.name: np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(ModelInputs)})


def build_model_inputs(clean_dir: Path, rows: pd.DataFrame, spec: InputSpec) -> ModelInputs:
    """Arrays for every clean row, in table order; missing modalities are masked, not dropped."""
    n = len(rows)
    image = np.zeros((n, 1, spec.image_size, spec.image_size), dtype=np.float32)
    floor = float(np.log(np.finfo(np.float32).eps))
    audio = np.full((n, spec.audio_frames, spec.n_mels), floor, dtype=np.float32)
    has_image, has_audio = np.zeros(n, bool), np.zeros(n, bool)
    for i, row in enumerate(rows.itertuples(index=False)):
        if row.image:
            with Image.open(clean_dir / row.image) as handle:
                image[i] = image_to_input(np.asarray(handle.convert("L")), spec.image_size)
            has_image[i] = True
        if row.audio:
            wave, rate = sf.read(str(clean_dir / row.audio), dtype="float32")
            audio[i] = waveform_to_log_mel(wave, rate, spec.n_mels, spec.audio_frames)
            has_audio[i] = True
    captions = np.array([c if isinstance(c, str) else "" for c in rows["caption"]], dtype=str)
    voices = np.array([v if isinstance(v, str) else "" for v in rows["voice"]], dtype=str)
    return ModelInputs(
        sample_id=np.array(rows["sample_id"], dtype=str), image=image, audio=audio, caption=captions,
        voice=voices, has_image=has_image, has_audio=has_audio, has_caption=captions != "",
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
