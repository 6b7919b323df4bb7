"""train.audio_mixup_alpha: the audio stage blends clips of a batch and their targets alike (mixup)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from flows.settings import TrainParams
from models.imagebind import AUDIO, TEXT, VISION, ImageBindConfig
from models.losses import pair_loss, soft_cross_entropy
from models.train import mix_batch, train_imagebind
from tests.unit.params_support import train_config
from tests.unit.test_imagebind import make_training_data

CONFIG = ImageBindConfig()
TINY = train_config(seed=3, batch_size=8, epochs_stage1=2, epochs_stage2=2)


def test_each_mixed_clip_is_mostly_itself_and_partly_one_other_clip_of_the_batch() -> None:
    batch = torch.arange(6, dtype=torch.float32)[:, None].repeat(1, 4)  # row i is all i
    mixed, (perm, lam) = mix_batch(batch, 0.4, np.random.default_rng(0))
    assert 0.5 <= lam <= 1.0
    assert sorted(perm.tolist()) == list(range(6))
    torch.testing.assert_close(mixed, lam * batch + (1 - lam) * batch[perm])
    again, (perm_again, lam_again) = mix_batch(batch, 0.4, np.random.default_rng(0))
    assert torch.equal(again, mixed) and torch.equal(perm_again, perm) and lam_again == lam  # seeded: resumable


def test_a_mixed_clip_is_scored_against_both_of_its_images() -> None:
    generator = torch.Generator().manual_seed(0)
    images = F.normalize(torch.randn(4, 8, generator=generator), dim=-1)
    perm, lam = torch.tensor([1, 0, 3, 2]), 0.7
    # A clip embedded between its two images is what mixup's loss asks for; plain InfoNCE asks for its own image.
    clips = 10 * F.normalize(lam * images + (1 - lam) * images[perm], dim=-1)
    pure = 10 * images
    assert pair_loss(clips, images, mix=(perm, lam)) < pair_loss(pure, images, mix=(perm, lam))
    assert pair_loss(pure, images) < pair_loss(clips, images)
    logits = clips @ images.T
    targets = lam * torch.eye(4) + (1 - lam) * torch.eye(4)[perm]
    expected = 0.5 * (soft_cross_entropy(logits, targets) + soft_cross_entropy(logits.T, targets.T / targets.T.sum(1, keepdim=True)))
    torch.testing.assert_close(pair_loss(clips, images, mix=(perm, lam)), expected)
    torch.testing.assert_close(pair_loss(clips, images, mix=(torch.arange(4), lam)), pair_loss(clips, images))


def test_mixup_changes_the_audio_tower_only() -> None:
    plain = train_imagebind(make_training_data(), CONFIG, TINY)
    mixed = train_imagebind(make_training_data(), CONFIG, dataclasses.replace(TINY, audio_mixup_alpha=0.4))
    for modality in (VISION, TEXT):  # stage 1 never sees audio
        for a, b in zip(mixed.model.tower_parameters(modality), plain.model.tower_parameters(modality)):
            assert torch.equal(a, b)
    assert any(not torch.equal(a, b) for a, b in zip(mixed.model.tower_parameters(AUDIO),
                                                     plain.model.tower_parameters(AUDIO)))


def test_params_yaml_sets_alpha_and_refuses_a_negative_one() -> None:
    assert train_config().audio_mixup_alpha == 0.0  # off unless params.yaml asks
    from flows.stage_config import train_config as build

    assert build(TrainParams(audio_mixup_alpha=0.4), 16_000).audio_mixup_alpha == 0.4
    with pytest.raises(ValueError, match="audio_mixup_alpha"):
        TrainParams(audio_mixup_alpha=-0.1)
    with pytest.raises(ValueError, match=r"audio_mixup_alpha must be ≥ 0 \(0: off\), got -1"):
        train_config(audio_mixup_alpha=-1.0)
