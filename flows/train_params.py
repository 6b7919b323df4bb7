"""params.yaml `train.audio_augment:`: speech augmentation of the audio stage's batches, and per-utterance CMVN.

Off by default: each helps some data and hurts other data, so a project turns on what it measured a gain
from (benchmarks/robust_speech.py is the example project's ablation, on speakers, accents and a speech
engine its training never hears).
"""

from __future__ import annotations

from pydantic import Field, model_validator

from flows.params_base import _Strict


class AudioAugmentParams(_Strict):
    enabled: bool = False  # augment the audio stage's training batches (never evaluation or serving); off until measured
    # Per-utterance CMVN in the audio tower, saved in the model config so evaluation and serving apply it too.
    cmvn: bool = False
    speed_prob: float = Field(0.5, ge=0, le=1)  # share of clips time-stretched: speakers talk at different rates
    speed_range: tuple[float, float] = (0.85, 1.15)  # speed factors, the usual Kaldi 0.9-1.1 widened a little
    pitch_prob: float = Field(0.5, ge=0, le=1)  # share of clips shifted along the mel axis: speakers differ in pitch
    pitch_max_bins: float = Field(2.0, ge=0)  # largest shift in mel bins either way; more moves formants past a vowel
    noise_prob: float = Field(0.3, ge=0, le=1)  # share of clips with added noise: real microphones hear rooms
    noise_snr_db: tuple[float, float] = (5.0, 30.0)  # SNR range of that noise, from loud cafe to quiet office
    reverb_prob: float = Field(0.3, ge=0, le=1)  # share of clips reverberated: speech is heard in rooms
    reverb_decay_frames: tuple[float, float] = (1.0, 8.0)  # impulse-response time constant, 10 ms frames (RT60 ~0.1-0.5 s)
    gain_prob: float = Field(0.5, ge=0, le=1)  # share of clips made louder or quieter: microphones differ in level
    gain_db: float = Field(10.0, ge=0)  # largest gain change either way, dB
    time_mask_prob: float = Field(0.5, ge=0, le=1)  # share of clips with a SpecAugment time mask: robust to dropouts
    time_mask_frames: int = Field(15, ge=0)  # longest masked run, frames (a short spoken word spans ~40)
    freq_mask_prob: float = Field(0.5, ge=0, le=1)  # share of clips with a SpecAugment frequency mask: channel gaps
    freq_mask_bins: int = Field(6, ge=0)  # widest masked band of mel bins (of 40)
    # Share of clips whose frequency axis is warped (VTLP, Jaitly & Hinton 2013): vocal tracts differ in length.
    # Off until a project measures a gain (benchmarks/robust_speech.py vtlp configs).
    vtlp_prob: float = Field(0.0, ge=0, le=1)
    vtlp_range: tuple[float, float] = (0.9, 1.1)  # warp factors, Jaitly & Hinton's; adult speakers span about +-10 %

    @model_validator(mode="after")
    def _ranges_in_order(self) -> "AudioAugmentParams":
        for name in ("speed_range", "noise_snr_db", "reverb_decay_frames", "vtlp_range"):
            low, high = getattr(self, name)
            if low > high:
                raise ValueError(f"train.audio_augment.{name} must be [low, high] with low <= high, got {[low, high]}")
        if self.speed_range[0] <= 0 or self.reverb_decay_frames[0] <= 0 or self.vtlp_range[0] <= 0:
            raise ValueError(f"train.audio_augment.speed_range, reverb_decay_frames and vtlp_range must be > 0, got "
                             f"{list(self.speed_range)}, {list(self.reverb_decay_frames)} and {list(self.vtlp_range)}")
        return self

