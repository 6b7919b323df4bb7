"""Decode and normalise one file of each modality; raise DecodeError with a reason code on bad input."""

from __future__ import annotations

import os
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from PIL import Image

from models.transforms import resample_mono, trim_silence


class DecodeError(ValueError):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class DecodedAudio:
    wave: np.ndarray  # (T,) float32, peak-normalised to 1, silence trimmed
    sample_rate: int
    source_peak: float  # peak amplitude before normalisation, in [0, 1]
    source_rms_db: float  # RMS level before normalisation, dBFS


SENSOR_NDIM: dict[str, int] = {"depth": 2, "thermal": 2, "imu": 2}
# Sample rates outside this range are broken headers, not recordings; they would also make
# the polyphase resampler build filters of millions of taps.
AUDIO_RATE_RANGE = (1_000, 384_000)


IMAGE_MODES = {1: "L", 3: "RGB"}  # channels kept -> Pillow mode


@dataclass(frozen=True)
class DecodedImage:
    pixels: np.ndarray  # (H, W) uint8 grayscale or (H, W, 3) uint8 RGB
    canonical: bool  # the file is a PNG already in that mode: it decodes to these pixels as it is


def decode_image(path: Path | str, max_pixels: int, channels: int) -> DecodedImage:
    """PNG/JPEG → (H, W) uint8 grayscale (channels 1) or (H, W, 3) uint8 RGB (channels 3; a grayscale
    file is converted, a transparent one loses its alpha); the header is checked against `max_pixels`
    before decoding."""
    if channels not in IMAGE_MODES:
        raise ValueError(f"channels must be one of {sorted(IMAGE_MODES)}, got {channels!r}")
    try:
        with Image.open(path) as probe:  # reads the header only
            width, height = probe.size
            if width * height > max_pixels:
                raise DecodeError("too_large", f"{width}x{height} exceeds the limit of {max_pixels} pixels")
            probe.verify()
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                canonical = image.format == "PNG" and image.mode == IMAGE_MODES[channels]
                return DecodedImage(np.asarray(image.convert(IMAGE_MODES[channels]), dtype=np.uint8), canonical)
    except DecodeError:
        raise
    except Image.DecompressionBombError as err:  # Pillow's own ceiling, reached before ours when ours is higher
        raise DecodeError("too_large", f"{err} (limit: {max_pixels} pixels)") from err
    except Exception as err:  # Pillow raises many types for broken files
        raise DecodeError("corrupt_image", f"cannot decode image: {type(err).__name__}: {err}") from err


def to_grayscale(pixels: np.ndarray) -> np.ndarray:
    """(H, W) or (H, W, 3) uint8 → (H, W) uint8, Pillow's luma (ITU-R 601-2): the same values a
    grayscale decode of the file gives."""
    return pixels if pixels.ndim == 2 else np.asarray(Image.fromarray(pixels, "RGB").convert("L"), dtype=np.uint8)


def find_wav_truncation(path: Path | str) -> str | None:
    """For a RIFF/WAVE file, why its data chunk is shorter than its header says; None when it is whole.

    libsndfile reads a truncated WAV without complaint, silently returning fewer samples.
    """
    size = os.stat(path).st_size
    with open(path, "rb") as handle:
        if handle.read(12)[:4] != b"RIFF":
            return None
        offset = 12
        while offset + 8 <= size:
            handle.seek(offset)
            header = handle.read(8)
            chunk, length = header[:4], struct.unpack("<I", header[4:])[0]
            if chunk == b"data":
                available = size - offset - 8
                streamed = length in (0, 0xFFFFFFFF)  # written before the length was known
                if not streamed and length > available:
                    return f"truncated: the header declares {length} bytes of audio, the file holds {available}"
                return None
            offset += 8 + length + (length & 1)  # chunks are padded to an even size
    return None


def decode_audio(path: Path | str, sample_rate: int, max_seconds: float, silence_db: float) -> DecodedAudio:
    """WAV/FLAC → mono float32 at `sample_rate`, silence-trimmed and peak-normalised."""
    try:
        truncation = find_wav_truncation(path)
        if truncation:
            raise DecodeError("corrupt_audio", truncation)
        with sf.SoundFile(str(path)) as handle:  # one open: the header is checked before any sample is read
            rate = handle.samplerate
            if not AUDIO_RATE_RANGE[0] <= rate <= AUDIO_RATE_RANGE[1]:
                low, high = AUDIO_RATE_RANGE
                raise DecodeError("corrupt_audio", f"sample rate {rate} Hz is outside {low}..{high} Hz")
            duration = handle.frames / rate
            if duration > max_seconds:
                raise DecodeError("too_large", f"{duration:.1f} s exceeds the limit of {max_seconds} s")
            wave = handle.read(dtype="float32", always_2d=True)
    except DecodeError:
        raise
    except Exception as err:
        raise DecodeError("corrupt_audio", f"cannot decode audio: {type(err).__name__}: {err}") from err
    if wave.size == 0 or not np.all(np.isfinite(wave)):
        raise DecodeError("corrupt_audio", "audio is empty or holds non-finite samples")
    mono = resample_mono(wave, rate, sample_rate)  # the same steps serving applies (models.transforms)
    peak = float(np.max(np.abs(mono)))
    if peak == 0.0:
        raise DecodeError("corrupt_audio", "audio is pure silence")
    rms_db = float(20 * np.log10(np.sqrt(np.mean(mono**2)) + 1e-12))
    trimmed = trim_silence(mono, silence_db)
    return DecodedAudio((trimmed / peak).astype(np.float32), sample_rate, min(peak, 1.0), rms_db)


def decode_sensor(path: Path | str, kind: str, max_values: int) -> np.ndarray:
    """`.npy` sensor array → float32; never unpickles, and checks the header (shape, dtype, size) before reading.

    The file is memory-mapped, so a header claiming a huge array costs nothing until it is refused.
    """
    try:
        mapped = np.load(path, mmap_mode="r", allow_pickle=False)  # object arrays cannot be mapped: refused here
    except Exception as err:
        raise DecodeError("corrupt_sensor", f"cannot load {kind} array: {type(err).__name__}: {err}") from err
    if not isinstance(mapped, np.ndarray):  # np.load also opens .npz archives
        mapped.close()
        raise DecodeError("corrupt_sensor", f"{kind} must be a single .npy array, got {type(mapped).__name__}")
    if mapped.ndim != SENSOR_NDIM[kind] or (kind == "imu" and mapped.shape[0] != 6):
        expected = "(6, T)" if kind == "imu" else "a 2-D array"
        raise DecodeError("corrupt_sensor", f"{kind} has shape {mapped.shape}; expected {expected}")
    if mapped.size == 0:
        raise DecodeError("corrupt_sensor", f"{kind} has shape {mapped.shape} and holds no values")
    if mapped.size > max_values:
        raise DecodeError("too_large", f"{kind} holds {mapped.size} values, more than the limit of {max_values}")
    if mapped.dtype.kind not in "iuf":
        raise DecodeError("corrupt_sensor", f"{kind} has dtype {mapped.dtype}; expected integers or floats")
    array = np.array(mapped, dtype=np.float32)
    if not np.all(np.isfinite(array)):
        detail = f"{kind} holds NaN or infinite values, or values beyond float32 (dtype {mapped.dtype})"
        raise DecodeError("corrupt_sensor", detail)
    return array
