"""Decode and normalise one file of each modality; raise DecodeError with a reason code on bad input."""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from math import gcd
from pathlib import Path

import numpy as np
import soundfile as sf
from PIL import Image
from scipy.signal import resample_poly


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


def decode_image(path: Path, max_pixels: int) -> np.ndarray:
    """PNG/JPEG → (H, W) uint8 grayscale; the header is checked against `max_pixels` before decoding."""
    try:
        data = path.read_bytes()
        with Image.open(io.BytesIO(data)) as probe:
            width, height = probe.size
            if width * height > max_pixels:
                raise DecodeError("corrupt_image", f"{width}x{height} exceeds the limit of {max_pixels} pixels")
            probe.verify()
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                return np.asarray(image.convert("L"), dtype=np.uint8)
    except DecodeError:
        raise
    except Exception as err:  # Pillow raises many types for broken files
        raise DecodeError("corrupt_image", f"cannot decode image: {type(err).__name__}: {err}") from err


def _trim_silence(wave: np.ndarray, silence_db: float) -> np.ndarray:
    peak = float(np.max(np.abs(wave))) if wave.size else 0.0
    if peak == 0.0:
        return wave
    loud = np.flatnonzero(np.abs(wave) >= peak * 10 ** (-silence_db / 20))
    return wave[loud[0] : loud[-1] + 1]


def decode_audio(path: Path, sample_rate: int, max_seconds: float, silence_db: float) -> DecodedAudio:
    """WAV/FLAC → mono float32 at `sample_rate`, silence-trimmed and peak-normalised."""
    try:
        info = sf.info(str(path))
        if info.duration > max_seconds:
            raise DecodeError("corrupt_audio", f"{info.duration:.1f} s exceeds the limit of {max_seconds} s")
        wave, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except DecodeError:
        raise
    except Exception as err:
        raise DecodeError("corrupt_audio", f"cannot decode audio: {type(err).__name__}: {err}") from err
    mono = wave.mean(axis=1)
    if mono.size == 0 or not np.all(np.isfinite(mono)):
        raise DecodeError("corrupt_audio", "audio is empty or holds non-finite samples")
    if rate != sample_rate:
        factor = gcd(rate, sample_rate)
        mono = resample_poly(mono, sample_rate // factor, rate // factor).astype(np.float32)
    peak = float(np.max(np.abs(mono)))
    if peak == 0.0:
        raise DecodeError("corrupt_audio", "audio is pure silence")
    rms_db = float(20 * np.log10(np.sqrt(np.mean(mono**2)) + 1e-12))
    trimmed = _trim_silence(mono, silence_db)
    return DecodedAudio((trimmed / peak).astype(np.float32), sample_rate, min(peak, 1.0), rms_db)


def decode_sensor(path: Path, kind: str) -> np.ndarray:
    """`.npy` sensor array, loaded without pickle; shape and finiteness checked per kind."""
    try:
        array = np.load(path, allow_pickle=False)
    except Exception as err:
        raise DecodeError("corrupt_sensor", f"cannot load {kind} array: {type(err).__name__}: {err}") from err
    if array.ndim != SENSOR_NDIM[kind] or (kind == "imu" and array.shape[0] != 6):
        expected = "(6, T)" if kind == "imu" else "a 2-D array"
        raise DecodeError("corrupt_sensor", f"{kind} has shape {array.shape}; expected {expected}")
    if not np.issubdtype(array.dtype, np.number) or not np.all(np.isfinite(array)):
        raise DecodeError("corrupt_sensor", f"{kind} must hold finite numbers (dtype {array.dtype})")
    return array.astype(np.float32)
