"""The training loop's guarantees: exact resume from checkpoints, clipping, schedule, precision."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import dataclasses
from pathlib import Path

import pytest
import torch

from models.checkpoints import CHECKPOINT_FILE, load_checkpoint, save_checkpoint
from models.imagebind import ImageBindConfig
from models.train import STAGE_AUDIO_IMAGE, STAGE_IMAGE_TEXT, build_scheduler, lr_at, train_imagebind
from tests.unit.test_imagebind import make_training_data
from tests.unit.params_support import train_config

CONFIG = ImageBindConfig()
TINY = train_config(seed=3, batch_size=8, epochs_stage1=3, epochs_stage2=3)  # 3 steps an epoch on 24 rows


class Killed(RuntimeError):
    """Stands for the process dying right after a checkpoint was written."""


def kill_after(stage: str, epoch: int):
    def on_epoch(s: str, e: int, _: dict[str, float]) -> None:
        if (s, e) == (stage, epoch):
            raise Killed(f"{s} epoch {e}")

    return on_epoch


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    different = [k for k in sa if not torch.equal(sa[k], sb[k])]
    assert not different, different


@pytest.fixture(scope="module")
def uninterrupted():
    return train_imagebind(make_training_data(), CONFIG, TINY)


@pytest.mark.parametrize(
    "stage, epoch",
    [(STAGE_IMAGE_TEXT, 0), (STAGE_IMAGE_TEXT, 2), (STAGE_AUDIO_IMAGE, 1)],
    ids=["mid-stage-1", "end-of-stage-1", "mid-stage-2"],
)
def test_a_killed_run_resumes_to_the_same_weights_and_history(uninterrupted, tmp_path: Path, stage: str, epoch: int) -> None:
    config = dataclasses.replace(TINY, checkpoint_dir=str(tmp_path / "ckpt"))
    data = make_training_data()
    with pytest.raises(Killed):
        train_imagebind(data, CONFIG, config, on_epoch=kill_after(stage, epoch))
    saved = load_checkpoint(tmp_path / "ckpt")
    assert (saved["stage"], saved["epoch"]) == (stage, epoch)

    seen: list[tuple[str, int]] = []
    resumed = train_imagebind(data, CONFIG, config, on_epoch=lambda s, e, m: seen.append((s, e)))

    assert seen[0] == ((stage, epoch + 1) if (stage, epoch) != (STAGE_IMAGE_TEXT, 2) else (STAGE_AUDIO_IMAGE, 0))
    assert_same_weights(resumed.model, uninterrupted.model)
    assert resumed.history == uninterrupted.history


def test_a_finished_run_resumes_to_its_result_without_training(tmp_path: Path) -> None:
    config = dataclasses.replace(TINY, epochs_stage1=1, epochs_stage2=1, checkpoint_dir=str(tmp_path))
    first = train_imagebind(make_training_data(), CONFIG, config)
    calls: list[str] = []
    again = train_imagebind(make_training_data(), CONFIG, config, on_epoch=lambda s, e, m: calls.append(s))
    assert calls == []
    assert_same_weights(again.model, first.model)
    assert again.history == first.history


def test_a_checkpoint_holds_the_whole_training_state(tmp_path: Path) -> None:
    config = dataclasses.replace(TINY, epochs_stage1=2, epochs_stage2=0, checkpoint_dir=str(tmp_path))
    result = train_imagebind(make_training_data(), CONFIG, config)
    saved = load_checkpoint(tmp_path)
    assert {"model", "optimizer", "scheduler", "rng", "stage", "epoch", "history"} <= saved.keys()
    assert set(saved["rng"]) >= {"torch", "numpy", "python"}
    assert (saved["stage"], saved["epoch"]) == (STAGE_IMAGE_TEXT, 1)
    assert saved["scheduler"]["last_epoch"] == 6  # 2 epochs × 3 steps
    assert saved["history"] == result.history
    assert [p.name for p in tmp_path.iterdir()] == [CHECKPOINT_FILE]  # no temporary file left behind


def test_resume_refuses_a_checkpoint_of_another_configuration(tmp_path: Path) -> None:
    config = dataclasses.replace(TINY, epochs_stage1=1, epochs_stage2=0, checkpoint_dir=str(tmp_path))
    train_imagebind(make_training_data(), CONFIG, config)
    with pytest.raises(ValueError, match=r"train\.lr: 0\.005 → 0\.001"):
        train_imagebind(make_training_data(), CONFIG, dataclasses.replace(config, lr=1e-3))
    with pytest.raises(ValueError, match="training data"):
        train_imagebind(make_training_data(seed=1), CONFIG, config)
    train_imagebind(make_training_data(), CONFIG, dataclasses.replace(config, num_threads=None))  # speed only: fine


def test_an_interrupted_write_keeps_the_previous_checkpoint(tmp_path: Path) -> None:
    save_checkpoint(tmp_path, {"epoch": 1})

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        save_checkpoint(tmp_path, {"epoch": 2, "bad": Unpicklable()})
    assert load_checkpoint(tmp_path) == {"epoch": 1}
    assert [p.name for p in tmp_path.iterdir()] == [CHECKPOINT_FILE]


def test_gradients_are_clipped_to_the_configured_norm() -> None:
    data = make_training_data()
    tight = dataclasses.replace(TINY, grad_clip=1e-3, epochs_stage2=0)
    clipped = train_imagebind(data, CONFIG, tight)
    free = train_imagebind(data, CONFIG, dataclasses.replace(tight, grad_clip=None))
    assert all(h["grad_norm"] > 1e-3 for h in clipped.history)  # the norm before clipping is reported
    assert "grad_norm" not in free.history[0]
    moved = {k: (clipped.model.state_dict()[k] - v).abs().max() for k, v in free.model.state_dict().items()}
    assert max(moved.values()) > 0  # clipping changed the trajectory
    with pytest.raises(ValueError, match="grad_clip"):
        train_config(grad_clip=0.0)


def test_the_scheduler_follows_warmup_then_cosine() -> None:
    param = torch.nn.Parameter(torch.zeros(2))
    optimizer = torch.optim.AdamW([param], lr=0.1)
    config = train_config(lr=0.1, warmup_fraction=0.1, min_lr_ratio=0.05)
    scheduler = build_scheduler(optimizer, 50, config)
    lrs = []
    for _ in range(50):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    expected = [lr_at(step, 50, 0.1, 0.1, 0.05) for step in range(50)]
    assert lrs == pytest.approx(expected, rel=1e-9)
    assert max(lrs) == pytest.approx(0.1) and lrs[-1] == pytest.approx(0.005, rel=0.05)


def test_the_cpu_trains_in_float32_whatever_bf16_says() -> None:
    config = dataclasses.replace(TINY, epochs_stage1=1, epochs_stage2=1, device="cpu")
    with_flag = train_imagebind(make_training_data(), CONFIG, dataclasses.replace(config, bf16=True))
    without = train_imagebind(make_training_data(), CONFIG, dataclasses.replace(config, bf16=False))
    assert_same_weights(with_flag.model, without.model)
    assert {p.dtype for p in with_flag.model.parameters()} == {torch.float32}


def test_bad_device_names_fail_at_configuration() -> None:
    with pytest.raises(ValueError, match="device must be"):
        train_config(device="gpu0")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_training_uses_bf16_autocast_and_returns_a_cpu_model() -> None:
    result = train_imagebind(make_training_data(), CONFIG, dataclasses.replace(TINY, device="cuda"))
    assert {p.device.type for p in result.model.parameters()} == {"cpu"}
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in result.history)
