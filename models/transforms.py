"""Model input transforms: decoded image and waveform arrays to the tensors the towers take.

Shared by the transform stage (training inputs) and by evaluation/serving, so a model
always sees inputs prepared the same way.
"""

from __future__ import annotations

from functools import lru_cache
from math import gcd

import numpy as np
from PIL import Image

from models.fbank import waveform_to_log_mel, waveforms_to_log_mel  # noqa: F401  (re-exported: the inputs' transforms)


def image_mode(channels: int) -> str:
    """The Pillow mode a decoded image is converted to for a model of `channels` image channels."""
    return "L" if channels == 1 else "RGB"


def image_to_input(image: np.ndarray, size: int) -> np.ndarray:
    """Grayscale (H, W) or RGB (H, W, 3) uint8 image → (C, size, size) float32 in [0, 1] (C = 1 or 3)."""
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)):
        raise ValueError(f"expected a grayscale (H, W) or RGB (H, W, 3) image, got shape {image.shape}")
    resized = np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.BILINEAR), dtype=np.float32)
    channels_first = resized[None] if resized.ndim == 2 else resized.transpose(2, 0, 1)  # (C, size, size)
    return channels_first / 255.0


def sensor_map_to_input(values: np.ndarray, size: int) -> np.ndarray:
    """A depth or thermal map (H, W) in the sensor's own units → (1, size, size) float32 in [0, 1].

    Sensors report metres, millimetres or kelvin; each map is scaled by its own range so the tower
    sees shape, not units (a constant map becomes zeros). Bilinear resizing, as for images.
    """
    if values.ndim != 2:
        raise ValueError(f"expected a 2-D sensor map (H, W), got shape {values.shape}")
    resized = np.asarray(Image.fromarray(np.asarray(values, dtype=np.float32))  # mode "F"
                         .resize((size, size), Image.Resampling.BILINEAR), dtype=np.float32)
    low, span = float(resized.min()), float(resized.max() - resized.min())
    return ((resized - low) / span if span > 0 else np.zeros_like(resized))[None]


def imu_to_input(series: np.ndarray, length: int) -> np.ndarray:
    """An IMU series (6, T) (3 accelerometer + 3 gyroscope axes) → (6, length) float32, centre-cropped
    or zero-padded at the end like a short audio clip (the sample rate is kept, not resampled)."""
    if series.ndim != 2 or series.shape[0] != 6:
        raise ValueError(f"expected an IMU series of shape (6, T), got shape {series.shape}")
    n = series.shape[1]
    if n >= length:
        start = (n - length) // 2
        return np.ascontiguousarray(series[:, start : start + length], dtype=np.float32)
    out = np.zeros((6, length), dtype=np.float32)
    out[:, :n] = series
    return out


@lru_cache(maxsize=32)
def _polyphase_filter(up: int, down: int, dtype: str) -> np.ndarray:
    """The low-pass FIR filter scipy's resample_poly designs for these factors (Kaiser window, beta 5): its
    design took two thirds of each call, and a batch holds few distinct rates. Read-only: shared by calls."""
    from scipy.signal import firwin  # a second to import: only where a clip needs resampling

    max_rate = max(up, down)
    taps = np.asarray(firwin(2 * 10 * max_rate + 1, 1.0 / max_rate, window=("kaiser", 5.0)), dtype=dtype)
    taps.setflags(write=False)
    return taps


def resample_mono(wave: np.ndarray, rate: int, target_rate: int) -> np.ndarray:
    """(T,) or (T, C) samples at `rate` → (T',) float32 mono at `target_rate` (channels averaged, polyphase;
    the same values as scipy's `resample_poly` with its default filter)."""
    mono = wave.mean(axis=1) if wave.ndim == 2 else wave
    if rate != target_rate:
        factor = gcd(rate, target_rate)
        up, down = target_rate // factor, rate // factor
        from scipy.signal import resample_poly

        window = _polyphase_filter(up, down, np.dtype(mono.dtype if mono.dtype.kind == "f" else np.float64).str)
        mono = resample_poly(mono, up, down, window=window)  # resample_poly copies it before scaling
    return np.asarray(mono, dtype=np.float32)


def trim_silence(wave: np.ndarray, silence_db: float) -> np.ndarray:
    """Drop leading and trailing samples quieter than `silence_db` below the peak."""
    peak = float(np.max(np.abs(wave))) if wave.size else 0.0
    if peak == 0.0:
        return wave
    loud = np.flatnonzero(np.abs(wave) >= peak * 10 ** (-silence_db / 20))
    return wave[loud[0] : loud[-1] + 1]


def prepare_waveform(wave: np.ndarray, rate: int, target_rate: int, silence_db: float) -> np.ndarray:
    """What the clean stage does to every clip, for a file that did not pass through it (serving):
    mono at `target_rate`, silence trimmed, peak-normalised to 1."""
    mono = trim_silence(resample_mono(wave, rate, target_rate), silence_db)
    peak = float(np.max(np.abs(mono))) if mono.size else 0.0
    if peak == 0.0 or not np.all(np.isfinite(mono)):
        raise ValueError("audio is empty, pure silence or holds non-finite samples")
    return (mono / peak).astype(np.float32)


