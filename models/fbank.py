"""Kaldi's log-mel filterbank in numpy, a few clips at a time: the audio input of flywheel's own towers.

numpy and scipy only (no Pillow), so params.yaml can be checked against it at start-up cheaply; the model
input transforms (models.transforms) re-export `waveform_to_log_mel` and `waveforms_to_log_mel`.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np


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
    if any(w.ndim != 1 for w in waves):
        raise ValueError(f"expected 1-D mono waveforms, got shapes {sorted({w.shape for w in waves if w.ndim != 1})}")
    counts = np.array([fbank_frame_count(len(w), sample_rate) for w in waves], dtype=np.int64)
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


class ClipGroups:
    """Clips analysed a group at a time: `analyse(keys, waves, sample_rate)` runs when the pending clips reach
    `max_frames` frames (as `frames_of(n_samples, sample_rate)` counts them), before a clip of another sample
    rate joins, and on `flush()`. Groups of a few hundred frames stay in the CPU caches.

    A subclass says what a group's analysis is by overriding both methods: methods, not callables handed in, so
    whoever holds a ClipGroups never ends up referring to itself through it (a builder that passed its own bound
    method was a reference cycle, kept with its arrays until Python's cyclic collector ran)."""

    def __init__(self, max_frames: int) -> None:
        self.max_frames = max_frames
        self._keys: list[Any] = []
        self._waves: list[np.ndarray] = []
        self._rate: int | None = None
        self._frames = 0

    def frames_of(self, n_samples: int, sample_rate: int) -> int:
        raise NotImplementedError

    def analyse(self, keys: list[Any], waves: list[np.ndarray], sample_rate: int) -> None:
        raise NotImplementedError

    def add(self, key: Any, wave: np.ndarray, sample_rate: int) -> None:
        if sample_rate != self._rate:
            self.flush()
            self._rate = sample_rate
        self._keys.append(key)
        self._waves.append(wave)
        self._frames += self.frames_of(len(wave), sample_rate)
        if self._frames >= self.max_frames:
            self.flush()

    def flush(self) -> None:
        if self._waves:
            self.analyse(self._keys, self._waves, self._rate)
        self._keys, self._waves, self._frames = [], [], 0
