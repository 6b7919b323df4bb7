"""train.ema_decay: a binding stage ends on an exponential moving average of its tower's weights."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

from flows.settings import TrainParams
from models.imagebind import AUDIO, TEXT, VISION, ImageBindConfig
from models.train import STAGE_AUDIO_IMAGE, train_imagebind
from tests.unit.params_support import train_config
from tests.unit.test_imagebind import make_training_data
from tests.unit.test_training_loop import Killed, assert_same_weights, kill_after

CONFIG = ImageBindConfig()
TINY = train_config(seed=3, batch_size=8, epochs_stage1=2, epochs_stage2=3)  # 3 steps an epoch on 24 rows
DECAY = 0.6  # short enough that the average differs from the last step's weights after 9 steps


def audio_tower(model: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.tower_parameters(AUDIO)]


def test_the_saved_audio_tower_is_the_moving_average_of_the_stage_s_steps() -> None:
    steps: list[dict[int, torch.Tensor]] = []  # id(parameter) -> its value, after each optimiser step

    def record(optimizer: torch.optim.Optimizer, *_: object) -> None:
        steps.append({id(p): p.detach().clone() for group in optimizer.param_groups for p in group["params"]})

    handle = register_optimizer_step_post_hook(record)
    try:
        plain = train_imagebind(make_training_data(), CONFIG, TINY)
    finally:
        handle.remove()
    audio = [id(p) for p in plain.model.tower_parameters(AUDIO)]
    audio_steps = [[step[i] for i in audio] for step in steps[-9:]]  # 3 epochs × 3 steps of the audio stage
    assert all(len(step) == len(audio) for step in steps[-9:])  # which optimises the audio tower alone

    averaged = train_imagebind(make_training_data(), CONFIG, dataclasses.replace(TINY, ema_decay=DECAY))

    # Replay the average from the weights the stage started with (the stage-1 run leaves audio untouched).
    initial = train_imagebind(make_training_data(), CONFIG, dataclasses.replace(TINY, epochs_stage2=0))
    expected = audio_tower(initial.model)
    for weights in audio_steps:
        expected = [DECAY * e + (1 - DECAY) * w for e, w in zip(expected, weights)]
    for got, want in zip(audio_tower(averaged.model), expected):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    assert any(not torch.equal(g, l) for g, l in zip(audio_tower(averaged.model), audio_tower(plain.model)))
    # Stage 1 makes the anchor: image and text towers are the plain run's, bit for bit.
    for modality in (VISION, TEXT):
        for a, b in zip(averaged.model.tower_parameters(modality), plain.model.tower_parameters(modality)):
            assert torch.equal(a, b)


def test_a_run_killed_inside_the_audio_stage_resumes_to_the_same_average(tmp_path: Path) -> None:
    config = dataclasses.replace(TINY, ema_decay=DECAY)
    uninterrupted = train_imagebind(make_training_data(), CONFIG, config)
    killed = dataclasses.replace(config, checkpoint_dir=str(tmp_path))
    for epoch in (1, 2):  # mid-stage, then after the stage's last checkpoint
        with pytest.raises(Killed):
            train_imagebind(make_training_data(), CONFIG, killed, on_epoch=kill_after(STAGE_AUDIO_IMAGE, epoch))
        resumed = train_imagebind(make_training_data(), CONFIG, killed)
        assert_same_weights(resumed.model, uninterrupted.model)
        for path in tmp_path.iterdir():
            path.unlink()


def test_params_yaml_sets_the_decay_and_refuses_one_that_never_moves() -> None:
    assert train_config().ema_decay == 0.0  # off unless params.yaml asks
    from flows.stage_config import train_config as build

    assert build(TrainParams(ema_decay=0.99), 16_000).ema_decay == 0.99
    with pytest.raises(ValueError, match="ema_decay"):
        TrainParams(ema_decay=1.0)
    with pytest.raises(ValueError, match=r"ema_decay must be in \[0, 1\) \(0: off\), got 1.5"):
        train_config(ema_decay=1.5)
