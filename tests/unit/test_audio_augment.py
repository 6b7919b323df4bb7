"""Speech augmentation of the audio stage (models/audio_augment.py) and per-utterance CMVN in the audio tower."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from flows.settings import TrainParams
from flows.stage_config import audio_augment
from models.artifacts import CONFIG_FILE, load_model, save_model
from models.audio_augment import (
    AudioAugment,
    add_noise,
    add_reverb,
    change_gain,
    cmvn,
    cmvn_speech_frames,
    mask_mels,
    mask_time,
    pitch_shift,
    speed_perturb,
    warp_vocal_tract,
)
from models.imagebind import AUDIO, AUDIO_MEL_POOL_LAYOUTS, ImageBind, ImageBindConfig
from models.train import STAGE_AUDIO_IMAGE, train_imagebind
from tests.unit.params_support import train_config
from tests.unit.test_paired_baseline import tiny_data

FRAMES, MELS, SAMPLE_RATE = 100, 40, 16_000
EACH = {
    "speed": lambda x, g: speed_perturb(x, (0.85, 1.15), g),
    "pitch": lambda x, g: pitch_shift(x, 2.0, g),
    "noise": lambda x, g: add_noise(x, (5.0, 30.0), g),
    "reverb": lambda x, g: add_reverb(x, (1.0, 8.0), g),
    "gain": lambda x, g: change_gain(x, 10.0, g),
    "time_mask": lambda x, g: mask_time(x, 15, g),
    "freq_mask": lambda x, g: mask_mels(x, 6, g),
    "vtlp": lambda x, g: warp_vocal_tract(x, (0.85, 1.15), SAMPLE_RATE, g),
}
PROBS = ("speed_prob", "pitch_prob", "noise_prob", "reverb_prob", "gain_prob", "time_mask_prob", "freq_mask_prob",
         "vtlp_prob")


def log_mels(rows: int = 8, seed: int = 0) -> torch.Tensor:
    """(rows, T, M) log-mel-like clips: speech in the first half, the padding floor after it."""
    x = torch.randn(rows, FRAMES, MELS, generator=torch.Generator().manual_seed(seed)) * 3 - 8
    x[:, FRAMES // 2 :] = float(np.log(np.finfo(np.float32).eps))
    return x


def augment_at(**overrides: object) -> AudioAugment:
    return replace(audio_augment(TrainParams().audio_augment, SAMPLE_RATE), enabled=True, **overrides)


@pytest.mark.parametrize("name", EACH)
def test_each_augmentation_keeps_shape_and_dtype_is_seeded_and_changes_the_clips(name: str) -> None:
    x = log_mels()
    first = EACH[name](x, torch.Generator().manual_seed(3))
    again = EACH[name](x, torch.Generator().manual_seed(3))
    other = EACH[name](x, torch.Generator().manual_seed(4))
    assert first.shape == x.shape and first.dtype == x.dtype
    assert torch.equal(first, again)
    assert not torch.equal(first, other) and not torch.equal(first, x)
    assert torch.isfinite(first).all()


def test_the_whole_augmentation_is_seeded_and_keeps_shape_and_dtype() -> None:
    x = log_mels()
    augment = augment_at()
    first = augment(x, torch.Generator().manual_seed(7))
    assert first.shape == x.shape and first.dtype == x.dtype
    assert torch.equal(first, augment(x, torch.Generator().manual_seed(7)))
    assert not torch.equal(first, x)


def test_at_probability_zero_or_disabled_nothing_changes() -> None:
    x = log_mels()
    assert torch.equal(augment_at(**{p: 0.0 for p in PROBS})(x, torch.Generator().manual_seed(0)), x)
    assert torch.equal(replace(augment_at(), enabled=False)(x, torch.Generator().manual_seed(0)), x)
    for prob in PROBS:  # each one alone at 0 leaves the others' draws and results as they were
        only = augment_at(**{p: (1.0 if p == prob else 0.0) for p in PROBS})
        assert not torch.equal(only(x, torch.Generator().manual_seed(0)), x), prob


def test_gain_is_a_constant_shift_and_noise_only_adds_power() -> None:
    x = log_mels()
    shifted = change_gain(x, 10.0, torch.Generator().manual_seed(0)) - x  # (B, T, M)
    assert torch.allclose(shifted, shifted[:, :1, :1].expand_as(shifted), atol=1e-5)
    assert shifted.abs().max() <= 10.0 * np.log(10) / 10 + 1e-5
    assert (add_noise(x, (5.0, 30.0), torch.Generator().manual_seed(0)) >= x - 1e-5).all()
    assert (add_reverb(x, (1.0, 8.0), torch.Generator().manual_seed(0)) >= x - 1e-5).all()


def formant_clips(bins: tuple[int, ...]) -> torch.Tensor:
    """(len(bins), T, M) clips, each quiet but for one smooth peak along the mel axis (a formant) in every frame."""
    centres = torch.tensor(bins, dtype=torch.float32)[:, None]  # (B, 1)
    peak = -10.0 + 10.0 * torch.exp(-((torch.arange(MELS)[None, :] - centres) ** 2) / 4.5)  # (B, M), ~1.5 bins wide
    return peak[:, None, :].expand(-1, FRAMES, -1).clone()


def peak_bins(x: torch.Tensor) -> torch.Tensor:
    """(B,) each clip's loudest mel position, the power-weighted mean bin of its first frame."""
    power = x[:, 0].exp()
    return (power * torch.arange(MELS)).sum(dim=1) / power.sum(dim=1)


def test_vtlp_moves_formants_up_for_a_shorter_vocal_tract_down_for_a_longer_and_scales_rather_than_shifts() -> None:
    x = formant_clips((4, 20))  # about 250 Hz and 1.9 kHz
    g = torch.Generator().manual_seed(0)
    assert torch.allclose(warp_vocal_tract(x, (1.0, 1.0), SAMPLE_RATE, g), x, atol=1e-4)  # factor 1: as it was
    up = warp_vocal_tract(x, (1.15, 1.15), SAMPLE_RATE, g)
    down = warp_vocal_tract(x, (0.85, 0.85), SAMPLE_RATE, g)
    assert up.shape == x.shape and up.dtype == x.dtype
    before, higher, lower = peak_bins(x), peak_bins(up), peak_bins(down)
    assert (higher > before + 0.2).all() and (lower < before - 0.2).all()
    # Hz scaled by the same factor is a small move in mel where mel is nearly linear (low frequencies) and a larger
    # one higher up, where pitch_shift would move both by the same number of bins.
    moved = higher - before
    assert moved[1] > 2 * moved[0]


def test_vtlp_keeps_the_top_of_the_band_where_it_is() -> None:
    x = formant_clips((MELS - 1,))
    for factor in (0.85, 1.15):
        warped = warp_vocal_tract(x, (factor, factor), SAMPLE_RATE, torch.Generator().manual_seed(0))
        assert int(warped[0, 0].argmax()) == MELS - 1, factor


def test_a_bad_range_or_probability_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="noise_prob.*1.5"):
        augment_at(noise_prob=1.5)
    with pytest.raises(ValueError, match="speed_range"):
        augment_at(speed_range=(1.2, 0.8))
    with pytest.raises(ValueError, match="speed_range"):
        TrainParams(audio_augment={"speed_range": (1.2, 0.8)})
    with pytest.raises(ValueError, match="vtlp_range"):
        TrainParams(audio_augment={"vtlp_range": (0.0, 1.1)})
    with pytest.raises(ValueError, match="vtlp_prob.*2"):
        augment_at(vtlp_prob=2.0)


def test_cmvn_gives_each_bin_zero_mean_and_unit_variance_over_time() -> None:
    x = log_mels()
    normalised = cmvn(x, time_dim=1)
    assert torch.allclose(normalised.mean(dim=1), torch.zeros(8, MELS), atol=1e-4)
    assert torch.allclose(normalised.std(dim=1, unbiased=False), torch.ones(8, MELS), atol=1e-3)
    assert torch.isfinite(cmvn(torch.full((2, FRAMES, MELS), -15.9), time_dim=1)).all()  # constant bins: 0, not NaN


def test_the_cmvn_tower_ignores_gain_and_the_fixed_one_does_not() -> None:
    x = log_mels(4)
    louder = x + 2.0
    with torch.no_grad():
        for flag, invariant in ((True, True), (False, False)):
            torch.manual_seed(0)
            model = ImageBind(ImageBindConfig(audio_cmvn=flag)).eval()
            same = torch.allclose(model({AUDIO: x})[AUDIO], model({AUDIO: louder})[AUDIO], atol=1e-5)
            assert same == invariant, flag


def test_the_cmvn_flag_round_trips_through_a_saved_model_and_older_models_load_without_it(tmp_path) -> None:
    model = ImageBind(ImageBindConfig(audio_cmvn=True)).eval()
    loaded = load_model(save_model(model, tmp_path / "new"))
    assert loaded.config.audio_cmvn is True
    x = log_mels(2)
    with torch.no_grad():
        assert torch.equal(model({AUDIO: x})[AUDIO], loaded({AUDIO: x})[AUDIO])
    old = save_model(ImageBind(ImageBindConfig()), tmp_path / "old")
    saved = json.loads((old / CONFIG_FILE).read_text())
    del saved["audio_cmvn"]  # as written before the flag existed
    (old / CONFIG_FILE).write_text(json.dumps(saved))
    assert load_model(old).config.audio_cmvn is False


def test_training_with_augmentation_runs_changes_only_the_audio_stage_and_is_repeatable() -> None:
    data = tiny_data()
    plain = train_imagebind(data, ImageBindConfig(), train_config(batch_size=32, epochs_stage1=1, epochs_stage2=2))
    recipe = train_config(batch_size=32, epochs_stage1=1, epochs_stage2=2, audio_augment=augment_at())
    augmented = train_imagebind(data, ImageBindConfig(audio_cmvn=True), recipe)
    again = train_imagebind(data, ImageBindConfig(audio_cmvn=True), recipe)
    assert [h["stage"] for h in augmented.history].count(STAGE_AUDIO_IMAGE) == 2
    assert augmented.history[0]["loss"] == plain.history[0]["loss"]  # stage 1 never sees audio
    assert augmented.history[-1]["loss"] != plain.history[-1]["loss"]
    assert [h["loss"] for h in augmented.history] == [h["loss"] for h in again.history]


def test_a_conv_front_end_that_cannot_tile_its_patches_is_refused() -> None:
    with pytest.raises(ValueError, match="multiples of 4"):
        ImageBindConfig(audio_conv_channels=8, audio_patch_mels=10, audio_n_mels=40)
    with pytest.raises(ValueError, match="audio_conv_channels must be >= 0"):
        ImageBindConfig(audio_conv_channels=-1)


@pytest.mark.parametrize("option", [
    {"audio_conv_channels": 8}, {"audio_mel_max_shift": 2},
    *({"audio_mel_pool_channels": 8, "audio_mel_pool_layout": layout} for layout in AUDIO_MEL_POOL_LAYOUTS),
])
def test_the_audio_front_ends_keep_the_token_grid_and_round_trip(tmp_path, option) -> None:
    plain, pooled = ImageBind(ImageBindConfig()).eval(), ImageBind(ImageBindConfig(**option)).eval()
    clips = torch.randn(3, FRAMES, MELS)
    with torch.no_grad():
        assert pooled({AUDIO: clips})[AUDIO].shape == (3, ImageBindConfig().embed_dim)
    assert pooled.modality_preprocessors[AUDIO].pos_embedding_helper.pos_embed.shape == \
        plain.modality_preprocessors[AUDIO].pos_embedding_helper.pos_embed.shape  # same tokens, same positions
    save_model(pooled, tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    with torch.no_grad():
        assert torch.allclose(loaded({AUDIO: clips})[AUDIO], pooled({AUDIO: clips})[AUDIO], atol=1e-6)


def test_mel_invariant_stems_that_cannot_build_are_refused() -> None:
    with pytest.raises(ValueError, match="one front end at a time"):
        ImageBindConfig(audio_mel_pool_channels=8, audio_conv_channels=8)
    with pytest.raises(ValueError, match="audio_mel_pool_channels must be >= 0"):
        ImageBindConfig(audio_mel_pool_channels=-1)
    with pytest.raises(ValueError, match=r"audio_mel_pool_layout must be one of \['two_5x3'.*got 'three'"):
        ImageBindConfig(audio_mel_pool_channels=8, audio_mel_pool_layout="three")
    with pytest.raises(ValueError, match="audio_mel_max_shift must be >= 0"):
        ImageBindConfig(audio_mel_max_shift=-1)
    with pytest.raises(ValueError, match="pools the plain patch projection"):
        ImageBindConfig(audio_mel_max_shift=2, audio_mel_pool_channels=8)
    with pytest.raises(ValueError, match="needs audio_cmvn True"):
        ImageBindConfig(audio_cmvn_speech_only=True)


def test_params_yaml_sets_the_mel_pool_front_end_the_family_builds() -> None:
    from typing import get_args

    from flows.stage_config import imagebind_config
    from models.inputs import InputSpec

    assert get_args(TrainParams.model_fields["audio_mel_pool_layout"].annotation) == AUDIO_MEL_POOL_LAYOUTS
    train = TrainParams(audio_mel_pool_channels=16, audio_mel_pool_layout="one_9x7")
    config = imagebind_config(train, InputSpec(16, MELS, FRAMES, image_channels=1))
    assert (config.audio_mel_pool_channels, config.audio_mel_pool_layout) == (16, "one_9x7")
    with pytest.raises(ValueError, match="two audio front ends"):
        TrainParams(audio_mel_pool_channels=16, audio_mel_max_shift=2)
    with pytest.raises(ValueError, match="audio_mel_pool_layout"):
        TrainParams(audio_mel_pool_channels=16, audio_mel_pool_layout="three")


def test_the_patch_max_pool_keeps_each_bands_largest_response_over_its_offsets() -> None:
    model = ImageBind(ImageBindConfig(audio_mel_max_shift=2)).eval()
    stem = model.modality_preprocessors[AUDIO].rgbt_stem.proj
    x = torch.randn(2, 1, MELS, FRAMES)
    padded = torch.nn.functional.pad(x, (0, 0, 2, 2), mode="replicate")
    with torch.no_grad():
        every_offset = stem.proj(padded)  # (B, width, M + 4 - 8 + 1, T / 20): one row per mel offset
        pooled = stem(x)
    band = ImageBindConfig().audio_patch_mels
    assert pooled.shape[2] == MELS // band
    for b in range(MELS // band):  # band b reads offsets b * band - 2 .. b * band + 2
        assert torch.equal(pooled[:, :, b], every_offset[:, :, b * band: b * band + 5].amax(dim=2))


def test_speech_only_cmvn_ignores_how_much_padding_follows_the_word() -> None:
    floor = float(np.log(np.finfo(np.float32).eps))
    word = torch.randn(2, 1, MELS, 40) - 3.0  # (B, 1, M, T) content frames
    short, long = (torch.cat([word, torch.full((2, 1, MELS, pad), floor)], dim=-1) for pad in (20, 60))
    a, b = cmvn_speech_frames(short, time_dim=-1, mel_dim=-2), cmvn_speech_frames(long, time_dim=-1, mel_dim=-2)
    assert torch.allclose(a[..., :40], b[..., :40], atol=1e-5)  # the word normalised alike
    assert torch.allclose(a[..., :40].mean(dim=-1), torch.zeros(2, 1, MELS), atol=1e-4)
    assert torch.equal(a[..., 40:], torch.zeros_like(a[..., 40:]))  # padding at the content's mean
    plain_short, plain_long = cmvn(short, time_dim=-1), cmvn(long, time_dim=-1)
    assert not torch.allclose(plain_short[..., :40], plain_long[..., :40], atol=1e-2)  # what it fixes



def test_the_mel_pool_front_ends_keep_every_mel_bin_until_the_bands_max() -> None:
    """Each layout's convolutions leave the whole mel axis and T / 4 frames for the band's max to pool."""
    for layout in AUDIO_MEL_POOL_LAYOUTS:
        config = ImageBindConfig(audio_mel_pool_channels=8, audio_mel_pool_layout=layout)
        front = ImageBind(config).eval().modality_preprocessors[AUDIO].rgbt_stem.proj
        with torch.no_grad():  # front[:-2]: before the band's max and the patch projection
            assert front[:-2](torch.randn(2, 1, MELS, FRAMES)).shape == (2, 8, MELS, FRAMES // 4), layout
