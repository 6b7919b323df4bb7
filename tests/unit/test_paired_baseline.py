"""The text-paired baseline of benchmarks/emergent_alignment.py: stage 2 pulls audio onto text."""

from __future__ import annotations

import numpy as np
import pytest

from models.imagebind import AUDIO, TEXT, ImageBindConfig
from models.train import STAGE_AUDIO_TEXT, STAGE_IMAGE_TEXT, TrainingData, train_imagebind
from tests.unit.params_support import train_config


def tiny_data(rows: int = 64) -> TrainingData:
    config, rng = ImageBindConfig(), np.random.default_rng(0)
    return TrainingData(
        image=rng.random((rows, 1, config.image_size, config.image_size), dtype=np.float32),
        audio=rng.normal(-13, 5, (rows, config.audio_frames, config.audio_n_mels)).astype(np.float32),
        text_emb=rng.normal(size=(rows, config.text_input_dim)).astype(np.float32),
        label=np.arange(rows) % 10,
    )


def test_the_paired_baseline_trains_audio_on_text_and_leaves_vision_alone() -> None:
    data = tiny_data()
    emergent = train_imagebind(data, ImageBindConfig(), train_config(batch_size=32, epochs_stage1=1, epochs_stage2=2))
    paired = train_imagebind(data, ImageBindConfig(),
                             train_config(batch_size=32, epochs_stage1=1, epochs_stage2=2, audio_anchor=TEXT))
    assert [h["stage"] for h in paired.history] == [STAGE_IMAGE_TEXT, STAGE_AUDIO_TEXT, STAGE_AUDIO_TEXT]
    # Same seed, same stage 1: only the audio tower differs between the two recipes.
    audio_tower = {id(p) for p in paired.model.tower_parameters(AUDIO)}
    theirs = dict(emergent.model.named_parameters())
    for name, value in paired.model.named_parameters():
        same = bool((theirs[name] == value).all())
        assert same == (id(value) not in audio_tower), name


def test_an_unknown_audio_anchor_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="audio_anchor.*'depth'"):
        train_config(audio_anchor="depth")
