"""Speech augmentation in the log-mel domain, per training batch, and per-utterance CMVN.

The model inputs hold Kaldi log-mel filterbanks (natural log of mel power), computed once per clip,
so the augmentations act there instead of on waveforms: a speed change stretches the frames, a
pitch change shifts the mel axis, noise and reverberation add power (`log(exp(x) + n)`), gain adds
a constant, and SpecAugment (Park et al., 2019) masks frames and bins. Every draw comes from the
epoch's torch generator, so a resumed run sees the same augmented batches.

Batches are (B, T, M) frames×mels, as `models.transforms.waveform_to_log_mel` makes them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

CMVN_EPS = 1e-5  # variance floor of CMVN: a constant bin (padding, silence) maps to 0, not to inf
# Speech-only CMVN counts a frame as content when its mean log-mel is this far (nats, ~4.3 dB) above the clip's
# quietest frame: the padding floor, a gain change and added noise all move with the clip, so the margin is relative.
CMVN_CONTENT_MARGIN = 1.0
# The mel axis of the inputs: Kaldi's filterbank (kaldi-native-fbank's defaults, as models.transforms.waveform_to_log_mel
# computes it), bins evenly spaced on mel = 1127 ln(1 + f / 700) from this low edge to the Nyquist frequency.
KALDI_MEL_LOW_HZ = 20.0
# VTLP's boundary (Jaitly & Hinton, 2013): frequencies up to about this scale by the warp factor; above it a straight
# line takes the rest of the band to the Nyquist frequency, so no energy leaves the axis.
VTLP_BOUNDARY_HZ = 4800.0


@dataclass(frozen=True)
class AudioAugment:
    """What to draw per clip; each augmentation is applied to a clip with its own probability.
    The values are params.yaml's `train.audio_augment` (reasons: flows/train_params.py)."""

    enabled: bool  # off: batches pass through untouched
    speed_prob: float  # share of clips time-stretched
    speed_range: tuple[float, float]  # speed factor range; > 1 is faster speech (fewer frames of content)
    pitch_prob: float  # share of clips shifted along the mel axis
    pitch_max_bins: float  # largest shift, in mel bins, either way
    noise_prob: float  # share of clips with added noise
    noise_snr_db: tuple[float, float]  # signal-to-noise ratio range of that noise, dB
    reverb_prob: float  # share of clips reverberated
    reverb_decay_frames: tuple[float, float]  # time constant range of the decaying impulse response, frames
    gain_prob: float  # share of clips made louder or quieter
    gain_db: float  # largest gain change, dB, either way
    time_mask_prob: float  # share of clips with a masked run of frames
    time_mask_frames: int  # longest masked run of frames
    freq_mask_prob: float  # share of clips with a masked band of mel bins
    freq_mask_bins: int  # widest masked band of bins
    vtlp_prob: float  # share of clips whose frequency axis is warped (VTLP): vocal tracts differ in length
    vtlp_range: tuple[float, float]  # warp factor range; > 1 moves formants up (a shorter vocal tract)
    sample_rate: int  # the inputs' sample rate, Hz: where the mel axis ends (VTLP warps in Hz)

    def __post_init__(self) -> None:
        for name in ("speed_range", "noise_snr_db", "reverb_decay_frames", "vtlp_range"):  # JSON gives lists back
            object.__setattr__(self, name, tuple(getattr(self, name)))
        for name in ("speed_prob", "pitch_prob", "noise_prob", "reverb_prob", "gain_prob", "time_mask_prob",
                     "freq_mask_prob", "vtlp_prob"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"audio augment {name} must be a probability in [0, 1], got {value}")
        for name, low_bound in (("speed_range", 0.0), ("noise_snr_db", -math.inf), ("reverb_decay_frames", 0.0),
                                ("vtlp_range", 0.0)):
            low, high = getattr(self, name)
            if not low_bound < low <= high:
                raise ValueError(f"audio augment {name} must be (low, high) with {low_bound} < low <= high, "
                                 f"got {(low, high)}")
        for name in ("pitch_max_bins", "gain_db", "time_mask_frames", "freq_mask_bins"):
            if getattr(self, name) < 0:
                raise ValueError(f"audio augment {name} must be >= 0, got {getattr(self, name)}")
        if self.sample_rate <= 2 * KALDI_MEL_LOW_HZ:
            raise ValueError(f"audio augment sample_rate must be over {2 * KALDI_MEL_LOW_HZ:g} Hz (the mel axis starts "
                             f"at {KALDI_MEL_LOW_HZ:g} Hz), got {self.sample_rate}")

    def __call__(self, batch: Tensor, generator: torch.Generator) -> Tensor:
        """(B, T, M) log-mel → the same shape and dtype, each clip augmented by its own draws."""
        if not self.enabled:
            return batch
        steps = (
            (self.speed_prob, lambda x, g: speed_perturb(x, self.speed_range, g)),
            (self.pitch_prob, lambda x, g: pitch_shift(x, self.pitch_max_bins, g)),
            (self.vtlp_prob, lambda x, g: warp_vocal_tract(x, self.vtlp_range, self.sample_rate, g)),
            (self.reverb_prob, lambda x, g: add_reverb(x, self.reverb_decay_frames, g)),
            (self.noise_prob, lambda x, g: add_noise(x, self.noise_snr_db, g)),
            (self.gain_prob, lambda x, g: change_gain(x, self.gain_db, g)),
            (self.time_mask_prob, lambda x, g: mask_time(x, self.time_mask_frames, g)),
            (self.freq_mask_prob, lambda x, g: mask_mels(x, self.freq_mask_bins, g)),
        )
        for prob, augment in steps:
            batch = apply_to_share(batch, prob, augment, generator)
        return batch


def apply_to_share(batch: Tensor, prob: float, augment, generator: torch.Generator) -> Tensor:
    """`augment(batch)` on the clips a draw picks with probability `prob`, the others unchanged."""
    if prob <= 0.0:
        return batch
    picked = torch.rand(batch.shape[0], generator=generator) < prob  # (B,)
    return torch.where(picked[:, None, None], augment(batch, generator), batch)


def uniform(n: int, low: float, high: float, generator: torch.Generator) -> Tensor:
    """(n,) draws from U(low, high)."""
    return low + (high - low) * torch.rand(n, generator=generator)


def _interpolate(x: Tensor, positions: Tensor, dim: int, fill: Tensor | None) -> Tensor:
    """Read `x` along `dim` (1: time, 2: mels) at fractional `positions` (B, L), linearly; positions
    outside the axis read `fill` (B,) when given, else the nearest edge."""
    size = x.shape[dim]
    clamped = positions.clamp(0, size - 1)
    low = clamped.floor().long()
    high = (low + 1).clamp(max=size - 1)
    weight = (clamped - low).to(x.dtype)
    if dim == 1:  # (B, T, M): gather frames
        index = lambda i: i[:, :, None].expand(-1, -1, x.shape[2])  # noqa: E731
        w = weight[:, :, None]
    else:  # gather bins
        index = lambda i: i[:, None, :].expand(-1, x.shape[1], -1)  # noqa: E731
        w = weight[:, None, :]
    out = torch.gather(x, dim, index(low)) * (1 - w) + torch.gather(x, dim, index(high)) * w
    if fill is not None:
        outside = (positions < 0) | (positions > size - 1)  # (B, L)
        mask = outside[:, :, None] if dim == 1 else outside[:, None, :]
        out = torch.where(mask, fill[:, None, None].to(x.dtype), out)
    return out


def speed_perturb(x: Tensor, speed_range: tuple[float, float], generator: torch.Generator) -> Tensor:
    """Time-stretch each clip by a factor from `speed_range` (frame t reads t × factor), resampled back
    to T frames; frames past the clip's end read its quietest value (the padding floor)."""
    b, t, _ = x.shape
    factor = uniform(b, *speed_range, generator)  # (B,)
    positions = torch.arange(t, dtype=torch.float32)[None, :] * factor[:, None]  # (B, T)
    return _interpolate(x, positions, 1, x.amin(dim=(1, 2)))


def pitch_shift(x: Tensor, max_bins: float, generator: torch.Generator) -> Tensor:
    """Shift each clip's spectrum by up to `max_bins` mel bins either way (fractional, edge bins repeated)."""
    b, _, m = x.shape
    shift = uniform(b, -max_bins, max_bins, generator)  # (B,)
    positions = torch.arange(m, dtype=torch.float32)[None, :] - shift[:, None]  # (B, M)
    return _interpolate(x, positions, 2, None)


def _mel(hz: Tensor) -> Tensor:
    return 1127.0 * torch.log1p(hz / 700.0)


def _hz(mel: Tensor) -> Tensor:
    return 700.0 * torch.expm1(mel / 1127.0)


def warp_vocal_tract(x: Tensor, factor_range: tuple[float, float], sample_rate: int,
                     generator: torch.Generator) -> Tensor:
    """VTLP (Jaitly & Hinton, 2013): scale each clip's frequency axis by a factor from `factor_range`, what a
    longer or shorter vocal tract does to every formant. Energy at f Hz moves to factor × f up to the boundary
    (VTLP_BOUNDARY_HZ × min(factor, 1) / factor), then along a straight line that keeps the Nyquist frequency
    fixed. Unlike `pitch_shift`, a constant move along the mel axis, this scales low frequencies (where mel is
    nearly linear) and shifts high ones. Each output bin reads the input at its centre's unwarped frequency,
    linearly between bins, edge bins repeated."""
    b, _, m = x.shape
    factor = uniform(b, *factor_range, generator)[:, None]  # (B, 1)
    nyquist = sample_rate / 2
    low, high = _mel(torch.tensor(KALDI_MEL_LOW_HZ)), _mel(torch.tensor(nyquist))
    step = (high - low) / (m + 1)  # Kaldi's triangles: bin i spans points i to i + 2, centred on point i + 1
    centre_hz = _hz(low + step * torch.arange(1, m + 1, dtype=torch.float32))[None, :]  # (1, M)
    boundary = VTLP_BOUNDARY_HZ * factor.clamp(max=1.0) / factor  # (B, 1): input Hz where the line starts
    warped_boundary = factor * boundary  # (B, 1): where it lands
    source_hz = torch.where(  # the inverse of the warp: which input frequency lands on each centre
        centre_hz <= warped_boundary, centre_hz / factor,
        nyquist - (nyquist - centre_hz) * (nyquist - boundary) / (nyquist - warped_boundary))  # (B, M)
    positions = (_mel(source_hz.clamp(min=KALDI_MEL_LOW_HZ)) - low) / step - 1  # fractional bin index
    return _interpolate(x, positions, 2, None)


def add_noise(x: Tensor, snr_db: tuple[float, float], generator: torch.Generator) -> Tensor:
    """Add noise power at an SNR from `snr_db` against the clip's mean power; the noise has a random
    spectral tilt and fluctuates per frame and bin (exponentially, as the power of Gaussian noise)."""
    b, t, m = x.shape
    power = x.exp()
    snr = uniform(b, *snr_db, generator)  # (B,)
    level = power.mean(dim=(1, 2)) * torch.pow(10.0, -snr / 10)  # (B,) mean noise power
    tilt = uniform(b, -1.0, 1.0, generator)[:, None] * torch.linspace(-1, 1, m)[None, :]  # (B, M), ±e over the band
    shape = torch.exp(tilt)
    shape = shape / shape.mean(dim=1, keepdim=True)
    fluctuation = -torch.log1p(-torch.rand(b, t, m, generator=generator))  # Exp(1): mean 1
    noise = level[:, None, None] * shape[:, None, :] * fluctuation
    return torch.log(power + noise.to(x.dtype))


def add_reverb(x: Tensor, decay_frames: tuple[float, float], generator: torch.Generator) -> Tensor:
    """Convolve each clip's power along time with exp(-k / tau), tau from `decay_frames`, the impulse
    response of a simple room (direct sound 1, reflections decaying), cut at 3 tau and at T frames."""
    b, t, _ = x.shape
    tau = uniform(b, *decay_frames, generator)  # (B,)
    taps = min(t, math.ceil(3 * decay_frames[1]) + 1)
    response = torch.exp(-torch.arange(taps, dtype=torch.float32)[None, :] / tau[:, None]).to(x.dtype)  # (B, K)
    power = x.exp()
    out = power.clone()
    for k in range(1, taps):  # taps ≤ T: a few dozen shifted adds of the whole batch
        out[:, k:] += response[:, k, None, None] * power[:, :-k]
    return torch.log(out)


def change_gain(x: Tensor, max_db: float, generator: torch.Generator) -> Tensor:
    """Scale each clip's power by up to ±`max_db` dB: a constant added to its log-mel."""
    db = uniform(x.shape[0], -max_db, max_db, generator)  # (B,)
    return x + (db * math.log(10) / 10)[:, None, None].to(x.dtype)


def _mask_run(x: Tensor, max_width: int, dim: int, generator: torch.Generator) -> Tensor:
    """SpecAugment: per clip, a run of up to `max_width` frames (dim 1) or bins (dim 2) set to the clip's mean."""
    b, size = x.shape[0], x.shape[dim]
    width = torch.randint(0, min(max_width, size) + 1, (b,), generator=generator)  # (B,)
    start = (torch.rand(b, generator=generator) * (size - width + 1)).long()  # (B,)
    position = torch.arange(size)[None, :]  # (1, L)
    masked = (position >= start[:, None]) & (position < (start + width)[:, None])  # (B, L)
    mask = masked[:, :, None] if dim == 1 else masked[:, None, :]
    return torch.where(mask, x.mean(dim=(1, 2), keepdim=True), x)


def mask_time(x: Tensor, max_frames: int, generator: torch.Generator) -> Tensor:
    """SpecAugment time mask: up to `max_frames` consecutive frames per clip."""
    return _mask_run(x, max_frames, 1, generator)


def mask_mels(x: Tensor, max_bins: int, generator: torch.Generator) -> Tensor:
    """SpecAugment frequency mask: up to `max_bins` consecutive mel bins per clip."""
    return _mask_run(x, max_bins, 2, generator)


def cmvn(x: Tensor, time_dim: int) -> Tensor:
    """Per-utterance cepstral mean and variance normalisation: each mel bin of each clip to zero mean and
    unit variance over time (`time_dim`), so loudness and a fixed channel colouring cancel out."""
    mean = x.mean(dim=time_dim, keepdim=True)
    var = x.var(dim=time_dim, keepdim=True, unbiased=False)
    return (x - mean) / torch.sqrt(var + CMVN_EPS)


def cmvn_speech_frames(x: Tensor, time_dim: int, mel_dim: int) -> Tensor:
    """CMVN with statistics over the clip's content frames only (mean log-mel more than CMVN_CONTENT_MARGIN above
    its quietest frame): a short word padded to the clip length is normalised as the same word spoken slowly,
    where plain `cmvn` lets the share of padding set every bin's mean and spread. The other frames become 0
    (the content's mean: far below it they would outweigh the word in any patch they share); a clip without
    content frames is normalised over all of them."""
    level = x.mean(dim=mel_dim, keepdim=True)  # frame loudness, same shape as x but 1 along mels
    content = level > level.amin(dim=time_dim, keepdim=True) + CMVN_CONTENT_MARGIN
    content = content | ~content.any(dim=time_dim, keepdim=True)  # all-quiet clip: every frame counts
    weight = content.to(x.dtype)
    count = weight.sum(dim=time_dim, keepdim=True)
    mean = (x * weight).sum(dim=time_dim, keepdim=True) / count
    var = (((x - mean) ** 2) * weight).sum(dim=time_dim, keepdim=True) / count
    return torch.where(content, (x - mean) / torch.sqrt(var + CMVN_EPS), torch.zeros((), dtype=x.dtype))
