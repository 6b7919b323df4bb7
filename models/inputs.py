"""Model inputs per batch: decoded images, waveforms and sensor arrays turned into the arrays the towers
take, stored as uncompressed `.npz` shards.

Decoded once: the clean stage builds each chunk's arrays from what it has just decoded and writes them
beside its clean files (`<clean batch>/inputs/part-*.npz`, with the `spec.json` they were built for). The
transform stage then selects the rows that passed validation from those parts, one part at a time (a part
whose rows all pass is linked as is), into the batch's folder that training, the champion's votes and the
golden-set evaluation read. A clean folder without arrays for the current spec (other `transform:` sizes,
a folder from an older flywheel) is read back file by file instead, with the same values.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pandas as pd
import soundfile as sf
from PIL import Image

from features.atomic import atomic_path, link_or_copy, staged_directory
from models.fbank import LOG_MEL_BATCH_FRAMES, ClipGroups, fbank_frame_count, waveforms_to_log_mel
from models.transforms import image_mode, image_to_input, imu_to_input, sensor_map_to_input

SHARD_ROWS = 2048  # rows per shard: 2048 × (16×16 image + 100×40 log-mel + 2 × 16×16 maps + 6×160 imu) float32 ≈ 47 MB
_SHARD_GLOB = "part-*.npz"
CLEAN_INPUTS_DIR, CLEAN_SPEC_NAME = "inputs", "spec.json"  # the arrays clean writes, by chunk, in its batch folder
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


class _LogMelGroups(ClipGroups):
    """A few hundred frames of clips go through the filterbank at once, into their rows of `audio`."""

    def __init__(self, audio: np.ndarray, spec: InputSpec) -> None:
        super().__init__(LOG_MEL_BATCH_FRAMES)
        self.audio, self.spec = audio, spec

    def frames_of(self, n_samples: int, sample_rate: int) -> int:
        return fbank_frame_count(n_samples, sample_rate)

    def analyse(self, rows: list[int], waves: list[np.ndarray], sample_rate: int) -> None:
        """A group of clips' log-mels, computed together (a clip's values do not depend on its neighbours)."""
        self.audio[rows] = waveforms_to_log_mel(waves, sample_rate, self.spec.n_mels, self.spec.audio_frames)


class InputsBuilder:
    """Fills the model inputs of up to `capacity` rows, one decoded sample at a time: the clean stage feeds it
    the arrays it has just decoded, `build_model_inputs` the ones it reads back from the clean files; both
    give the same values for the same sample."""

    def __init__(self, capacity: int, spec: InputSpec) -> None:
        n = capacity
        self.spec, self._n = spec, 0
        self._ids: list[str] = []
        self._captions: list[str] = []
        self._image = np.zeros((n, spec.image_channels, spec.image_size, spec.image_size), dtype=np.float32)
        self._audio = np.full((n, spec.audio_frames, spec.n_mels), float(np.log(np.finfo(np.float32).eps)),
                              dtype=np.float32)
        self._sensors = {"depth": np.zeros((n, 1, spec.depth_size, spec.depth_size), dtype=np.float32),
                         "thermal": np.zeros((n, 1, spec.thermal_size, spec.thermal_size), dtype=np.float32),
                         "imu": np.zeros((n, IMU_CHANNELS, spec.imu_length), dtype=np.float32)}
        self._to_input = {"depth": lambda v: sensor_map_to_input(v, spec.depth_size),
                          "thermal": lambda v: sensor_map_to_input(v, spec.thermal_size),
                          "imu": lambda v: imu_to_input(v, spec.imu_length)}
        self._has = {kind: np.zeros(n, bool) for kind in ("image", "audio", *SENSOR_KINDS)}
        self._mode = image_mode(spec.image_channels)
        self._clips = _LogMelGroups(self._audio, spec)  # clips whose log-mel is still to compute

    def add(self, sample_id: str, caption: object, image: np.ndarray | None = None, wave: np.ndarray | None = None,
            sample_rate: int | None = None, sensors: dict[str, np.ndarray] | None = None) -> None:
        """One sample: `image` as the clean PNG holds it ((H, W) or (H, W, 3) uint8), `wave` as the clean WAV
        reads back (float32 at `sample_rate`), `sensors` as their clean `.npy` arrays; None where absent."""
        i = self._n
        if i == len(self._image):
            raise ValueError(f"this builder holds at most {i} rows")
        if image is not None:
            if image.ndim != (2 if self._mode == "L" else 3):  # a grayscale PNG in an RGB task, or the reverse
                image = np.asarray(Image.fromarray(image).convert(self._mode))
            self._image[i] = image_to_input(image, self.spec.image_size)
            self._has["image"][i] = True
        if wave is not None:
            self._clips.add(i, wave, sample_rate)
            self._has["audio"][i] = True
        for kind, values in (sensors or {}).items():
            self._sensors[kind][i] = self._to_input[kind](values)
            self._has[kind][i] = True
        self._ids.append(sample_id)
        self._captions.append(caption if isinstance(caption, str) else "")
        self._n += 1

    def __len__(self) -> int:
        return self._n

    @property
    def full(self) -> bool:
        return self._n == len(self._image)

    def build(self) -> ModelInputs:
        """The rows added so far, in order."""
        self._clips.flush()
        n = self._n
        captions = np.array(self._captions, dtype=str)
        return ModelInputs(
            sample_id=np.array(self._ids, dtype=str), image=self._image[:n], audio=self._audio[:n], caption=captions,
            **{kind: array[:n] for kind, array in self._sensors.items()}, has_caption=captions != "",
            **{f"has_{kind}": mask[:n] for kind, mask in self._has.items()},
        )


def build_model_inputs(clean_dir: Path, rows: pd.DataFrame, spec: InputSpec) -> ModelInputs:
    """Arrays for every clean row, in table order, read back from the clean files; missing modalities are
    masked, not dropped.

    Images are read as grayscale or RGB as `spec.image_channels` says (a grayscale file in an RGB task
    repeats its one channel; a colour file in a grayscale task is converted to luminance). The transform
    stage reads the arrays clean wrote instead (`load_clean_inputs`, `save_model_input_shards`); this is for
    clean folders without them.
    """
    builder = InputsBuilder(len(rows), spec)
    mode = image_mode(spec.image_channels)
    for row in rows.itertuples(index=False):
        image = wave = rate = None
        if row.image:
            with Image.open(clean_dir / row.image) as handle:
                image = np.asarray(handle.convert(mode))
        if row.audio:
            wave, rate = sf.read(str(clean_dir / row.audio), dtype="float32")
        sensors = {kind: np.load(clean_dir / path, allow_pickle=False)
                   for kind in SENSOR_KINDS if (path := _sensor_path(row, kind)) is not None}
        builder.add(row.sample_id, row.caption, image, wave, rate, sensors)
    return builder.build()


def _write_archive(path: Path, inputs: ModelInputs) -> None:
    """Uncompressed: deflate took about a sixth of the model-input stage's time (0.5 ms a row) for half the
    bytes, and a shard clean wrote can then be linked as is."""
    np.savez(path, **{f.name: getattr(inputs, f.name) for f in fields(inputs)})


def write_clean_inputs_part(folder: Path, name: str, inputs: ModelInputs) -> None:
    """Arrays of consecutive rows of a chunk, as the clean stage writes them next to its clean files
    (`<clean batch>/inputs/part-<name>.npz`; names sort in row order)."""
    _write_archive(folder / f"part-{name}.npz", inputs)


def write_clean_inputs_spec(folder: Path, spec: InputSpec) -> None:
    """The spec the clean arrays were made with: a transform with other sizes reads the files instead."""
    (folder / CLEAN_SPEC_NAME).write_text(json.dumps(asdict(spec), sort_keys=True))


def clean_inputs_plan(clean_dir: Path, rows: pd.DataFrame, spec: InputSpec) -> list[tuple[Path, np.ndarray]] | None:
    """Per part of the arrays the clean stage wrote, which of its rows `rows` takes; None when clean wrote
    none for this spec, or when the parts do not hold exactly these rows in this order (a table edited by
    hand): then the arrays are built from the clean files. Reads only the parts' sample ids."""
    folder = clean_dir / CLEAN_INPUTS_DIR
    try:
        written = json.loads((folder / CLEAN_SPEC_NAME).read_text())
    except FileNotFoundError:
        return None
    if written != asdict(spec):
        return None
    import pyarrow as pa

    # The rows are the parts' rows in order, less some: each part's wanted rows are the next ones of `wanted`, so
    # one pass matches them, holding one part's ids and a window of as many wanted ones (no set or array of the
    # batch's ids: 25 MB at 100k rows)
    wanted = pa.array(rows["sample_id"], pa.string())  # an Arrow-backed column's own buffers (maybe chunked)
    plan: list[tuple[Path, np.ndarray]] = []
    taken = 0
    for part in sorted(folder.glob(_SHARD_GLOB)):
        with np.load(part, allow_pickle=False) as archive:
            ids = archive["sample_id"].tolist()
        window = wanted.slice(taken, len(ids)).to_pylist()
        mask = np.zeros(len(ids), dtype=bool)
        matched = 0
        for i, sample_id in enumerate(ids):
            if matched < len(window) and sample_id == window[matched]:
                mask[i] = True
                matched += 1
        plan.append((part, mask))
        taken += matched
    return plan if taken == len(wanted) else None


def load_clean_inputs(clean_dir: Path, rows: pd.DataFrame, spec: InputSpec) -> ModelInputs:
    """The model inputs of `rows`, in order, from the arrays clean wrote (or from the clean files)."""
    plan = clean_inputs_plan(clean_dir, rows, spec)
    if plan is None:
        return build_model_inputs(clean_dir, rows, spec)
    parts = [_load_archive(part).take(np.flatnonzero(mask)) for part, mask in plan if mask.any()]
    return ModelInputs.concat(parts) if parts else InputsBuilder(0, spec).build()


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
    plan = clean_inputs_plan(clean_dir, rows, spec)
    if plan is not None:
        return _select_clean_shards(folder, plan, spec, len(rows), progress)
    starts = range(0, max(len(rows), 1), shard_rows)
    with staged_directory(folder) as staging:
        for index, start in enumerate(starts):
            part = rows.iloc[start : start + shard_rows]
            _write_archive(staging / f"part-{index:05d}.npz", build_model_inputs(clean_dir, part, spec))
            if progress:
                progress(min(start + shard_rows, len(rows)), len(rows))
    return len(starts)


def _select_clean_shards(folder: Path, plan: list[tuple[Path, np.ndarray]], spec: InputSpec, total: int,
                         progress: Callable[[int, int], None] | None) -> int:
    """The batch's shards from clean's parts, one part in memory at a time: a part whose rows all go on is
    linked, one that lost rows (validation, near duplicates) is rewritten with the rest."""
    index = done = 0
    with staged_directory(folder) as staging:
        for part, mask in plan:
            if not mask.any():
                continue
            target = staging / f"part-{index:05d}.npz"
            if mask.all():
                link_or_copy(part, target)  # a whole part taken as is costs no bytes
            else:
                _write_archive(target, _load_archive(part).take(np.flatnonzero(mask)))
            index, done = index + 1, done + int(mask.sum())
            if progress:
                progress(done, total)
        if index == 0:  # an empty batch still gets one (empty) shard
            _write_archive(staging / "part-00000.npz", InputsBuilder(0, spec).build())
            index = 1
    return index


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
