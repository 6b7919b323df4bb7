"""Model input transforms: decoded image and waveform arrays to the tensors the towers take.

Shared by the transform stage (training inputs) and by evaluation/serving, so a model
always sees inputs prepared the same way.
"""

from __future__ import annotations

from functools import lru_cache
from math import gcd

import numpy as np
from PIL import Image


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


def kaldi_mel_weights(n_mels: int, n_fft: int, rate: int, low_hz: float = 20.0) -> np.ndarray:
    """(n_mels, n_fft // 2 + 1) triangular filters on Kaldi's mel scale, 1127 ln(1 + f / 700).

    Triangles are evenly spaced in mel from `low_hz` to Nyquist and the Nyquist FFT bin gets
    no weight, as in Kaldi. A triangle narrower than the FFT bin spacing covers no bin and
    stays all zero (its log energy is the floor), as torchaudio leaves it.
    """
    mel_low, mel_high = 1127.0 * np.log1p(low_hz / 700.0), 1127.0 * np.log1p(rate / 2 / 700.0)
    step = (mel_high - mel_low) / (n_mels + 1)
    left = mel_low + step * np.arange(n_mels)[:, None]  # (n_mels, 1); centre = left + step
    fft_mels = 1127.0 * np.log1p(rate / n_fft * np.arange(n_fft // 2)[None] / 700.0)  # (1, n_fft / 2)
    weights = np.clip(np.minimum(fft_mels - left, left + 2 * step - fft_mels) / step, 0.0, None)
    return np.pad(weights, ((0, 0), (0, 1)))


FRAME_SECONDS, HOP_SECONDS = 0.025, 0.010  # Kaldi's fbank frames: 25 ms every 10 ms, edges snipped
LOG_MEL_FLOOR = float(np.log(np.finfo(np.float32).eps))  # log of Kaldi's energy floor; also the padding value
# Frames worth analysing at once (about 5 one-second clips): per clip, 16 clips at a time took 0.8x the time of
# one at a time, 64 at a time 1.3x (the working arrays outgrow the CPU caches)
LOG_MEL_BATCH_FRAMES = 512


def fbank_frame_count(n_samples: int, sample_rate: int) -> int:
    """How many Kaldi frames (25 ms every 10 ms, edges snipped) a clip of `n_samples` makes."""
    length, hop = round(sample_rate * FRAME_SECONDS), round(sample_rate * HOP_SECONDS)
    return 0 if n_samples < length else 1 + (n_samples - length) // hop


@lru_cache(maxsize=8)
def _fbank_constants(sample_rate: int, n_mels: int) -> tuple[int, int, int, np.ndarray, np.ndarray]:
    """(frame length, hop, FFT size, Povey window (float32), mel weights (n_fft/2 + 1, n_mels) float64) of
    kaldi-native-fbank's default filterbank; read-only, shared by calls."""
    length, hop = round(sample_rate * FRAME_SECONDS), round(sample_rate * HOP_SECONDS)
    n_fft = 1 << (length - 1).bit_length()  # Kaldi rounds the frame up to a power of two: 512 for 400 samples
    weights = kaldi_mel_weights(n_mels, n_fft, sample_rate)
    empty = np.flatnonzero(weights.sum(axis=1) == 0)
    if empty.size:  # Kaldi (and kaldi-native-fbank) refuse such a filterbank; so do we, before any clip
        raise ValueError(f"{n_mels} mel bins at {sample_rate} Hz leave bin(s) {empty.tolist()} narrower than one "
                         f"FFT bin of a {n_fft}-point frame: lower transform.n_mels")
    window = ((0.5 - 0.5 * np.cos(2 * np.pi * np.arange(length) / (length - 1))) ** 0.85).astype(np.float32)
    mel = np.ascontiguousarray(weights.T)  # float64: see log_mel_frames
    window.setflags(write=False)
    mel.setflags(write=False)
    return length, hop, n_fft, window, mel


def check_filterbank(sample_rate: int, n_mels: int) -> None:
    """Raise ValueError, naming the setting, when `n_mels` Kaldi mel bins cannot be built at `sample_rate`
    (params.yaml is checked with it at start-up, before any clip is cleaned)."""
    _fbank_constants(sample_rate, n_mels)


def log_mel_frames(waves: list[np.ndarray], sample_rate: int, n_mels: int) -> tuple[np.ndarray, np.ndarray]:
    """Several mono clips → every frame's Kaldi log-mel filterbank in one pass: ((F, n_mels) float32 frames of
    all clips in order, (N,) frames per clip). kaldi-native-fbank's defaults with no dither: per-frame DC
    removal, pre-emphasis 0.97, Povey window, power spectrum of the frame padded to a power of two, mel
    filters from 20 Hz to Nyquist, log floored at float32 epsilon.

    Written with numpy, in float32 as Kaldi computes it, because kaldi-native-fbank analyses one clip at a
    time at about 15 us a frame, the largest single cost of the clean stage (benchmarks/data_plane.py); one
    FFT and one matrix product over a few hundred frames take a seventh of that. Its values agree with
    kaldi-native-fbank's within 6e-4 over 1,000 demo clips (float32 rounding in two FFTs; the tests hold it to
    1e-3: tests/unit/test_transforms_fbank.py)."""
    from scipy import fft  # 0.6 s to import: only where clips are analysed, not in every run's start-up

    length, hop, n_fft, window, mel = _fbank_constants(sample_rate, n_mels)
    counts = np.array([fbank_frame_count(len(w), sample_rate) for w in waves], dtype=np.int64)
    for w in waves:
        if w.ndim != 1:
            raise ValueError(f"expected 1-D mono waveforms, got shape {w.shape}")
    if not counts.sum():
        return np.empty((0, n_mels), np.float32), counts
    frames = np.concatenate([np.lib.stride_tricks.sliding_window_view(np.asarray(w, np.float32), length)[::hop][:n]
                             for w, n in zip(waves, counts) if n])  # (F, length), a copy
    frames -= frames.mean(axis=1, keepdims=True)
    frames[:, 1:] -= np.float32(0.97) * frames[:, :-1]  # pre-emphasis; the first sample against itself
    frames[:, 0] *= np.float32(1 - 0.97)
    frames *= window
    spectrum = fft.rfft(frames, n=n_fft, axis=1)
    del frames
    power = np.square(spectrum.real)
    power += np.square(spectrum.imag)
    del spectrum
    # In float64, then rounded: a float32 product's last bit depends on how many rows BLAS multiplies at once,
    # so a clip's values would depend on the clips beside it; these do not (serving one clip, clean a part).
    energies = (power.astype(np.float64) @ mel).astype(np.float32)
    return np.log(np.maximum(energies, np.finfo(np.float32).eps, out=energies), out=energies), counts


def fit_frames(feats: np.ndarray, frames: int) -> np.ndarray:
    """(n, n_mels) log-mel frames → (frames, n_mels): long clips centre-cropped, short ones padded with the
    filterbank's floor value."""
    n = len(feats)
    if n >= frames:
        start = (n - frames) // 2
        return feats[start : start + frames]
    out = np.full((frames, feats.shape[1]), LOG_MEL_FLOOR, dtype=np.float32)
    out[:n] = feats
    return out


def waveforms_to_log_mel(waves: list[np.ndarray], sample_rate: int, n_mels: int, frames: int) -> np.ndarray:
    """Mono waveforms → (N, frames, n_mels) float32 Kaldi-compatible log-mel filterbanks (`log_mel_frames`),
    each cropped or padded as `fit_frames` says."""
    feats, counts = log_mel_frames(waves, sample_rate, n_mels)
    starts = np.concatenate([[0], np.cumsum(counts)])
    out = np.empty((len(waves), frames, n_mels), dtype=np.float32)
    for i in range(len(waves)):
        out[i] = fit_frames(feats[starts[i] : starts[i + 1]], frames)
    return out


def waveform_to_log_mel(wave: np.ndarray, sample_rate: int, n_mels: int, frames: int) -> np.ndarray:
    """Mono waveform → Kaldi-compatible log-mel filterbank (frames, n_mels), cropped or padded.

    10 ms hop, 25 ms window, no dither (deterministic). Short clips are padded with the
    filterbank's floor value, long ones centre-cropped, so every clip has `frames` frames.
    """
    if wave.ndim != 1:
        raise ValueError(f"expected a 1-D mono waveform, got shape {wave.shape}")
    return waveforms_to_log_mel([wave], sample_rate, n_mels, frames)[0]
