"""Fine-tuning pretrained ImageBind weights with LoRA through the one training loop.

The user with Meta's `imagebind_huge.pth` calls `train_imagebind(..., init_weights=state,
lora=lora_settings(...))`: the weights load strictly, adapters go on the native trunks, only
they and the heads train, a killed run resumes exactly, and the result is a plain ImageBind
in the official layout. A tiny configuration with the official kinds of input (RGB images,
a native text tower on token ids) stands in for the 1.2 B one here.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from models.artifacts import load_model
from models.imagebind import ImageBind, ImageBindConfig
from models.train import STAGE_IMAGE_TEXT, TrainingData, train_imagebind
from models.train_ddp import save_training_data
from tests.unit.test_training_loop import Killed, assert_same_weights, kill_after
from tests.unit.params_support import lora_settings, train_config

pytestmark = pytest.mark.slow

# Official kinds of input at toy sizes: 3-channel images and token ids for a native text trunk.
CONFIG = ImageBindConfig(image_channels=3, text_input_dim=None, text_vocab_size=1000, text_context_length=12,
                         modalities=("vision", "text", "audio"))
PRETRAIN = train_config(seed=0, batch_size=8, epochs_stage1=1, epochs_stage2=1)
FINETUNE = train_config(seed=1, batch_size=8, epochs_stage1=2, epochs_stage2=2, lr=1e-2)
LORA = lora_settings(r=4, alpha=8.0, dropout=0.0)
ROWS = 24
PROJECT = Path(__file__).resolve().parents[2]


def official_kind_data(seed: int = 0) -> TrainingData:
    rng = np.random.default_rng(seed)
    tokens = rng.integers(1, CONFIG.text_vocab_size - 1, size=(ROWS, CONFIG.text_context_length))
    tokens[:, -1] = CONFIG.text_vocab_size - 1  # an end-of-text token, where the native text head pools
    return TrainingData(
        image=rng.random((ROWS, 3, CONFIG.image_size, CONFIG.image_size), dtype=np.float32),
        audio=rng.normal(-13.0, 5.0, (ROWS, CONFIG.audio_frames, CONFIG.audio_n_mels)).astype(np.float32),
        text_emb=tokens.astype(np.int64),
        label=np.arange(ROWS) % 4,
    )


@pytest.fixture(scope="module")
def pretrained() -> dict[str, torch.Tensor]:
    """Stands for a downloaded checkpoint: a state_dict of this architecture."""
    return train_imagebind(official_kind_data(), CONFIG, PRETRAIN).model.state_dict()


@pytest.fixture(scope="module")
def tuned(pretrained):
    return train_imagebind(official_kind_data(1), CONFIG, FINETUNE, init_weights=pretrained, lora=LORA)


def changed(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> set[str]:
    return {k for k in before if not torch.equal(before[k], after[k])}


def test_the_result_is_a_plain_imagebind_in_the_pretrained_layout(pretrained, tuned) -> None:
    assert type(tuned.model) is ImageBind
    state = tuned.model.state_dict()
    assert {k: v.shape for k, v in state.items()} == {k: v.shape for k, v in pretrained.items()}
    fresh = ImageBind(CONFIG)
    fresh.load_state_dict(state, strict=True)  # serves and reloads as any model of this config


def test_only_attention_and_heads_of_the_trained_towers_change(pretrained, tuned) -> None:
    moved = changed(pretrained, tuned.model.state_dict())
    attention = {k for k in moved if ".attn." in k}
    for modality in ("vision", "text", "audio"):
        assert f"modality_trunks.{modality}.blocks.0.attn.in_proj_weight" in attention  # adapters merged in
        assert any(k.startswith(f"modality_heads.{modality}.") for k in moved)  # heads trained (train_heads)
    frozen = moved - attention - {k for k in moved if k.startswith("modality_heads.")}
    assert frozen == set(), f"LoRA fine-tuning changed frozen weights: {sorted(frozen)}"
    assert not any(".mlp." in k or "preprocessors" in k or "postprocessors" in k for k in moved)


def test_vision_is_the_fixed_anchor_in_stage_two(pretrained) -> None:
    """Stage 2 trains audio alone: with stage 1 off, vision and text keep their pretrained weights."""
    config = dataclasses.replace(FINETUNE, epochs_stage1=0)
    result = train_imagebind(official_kind_data(1), CONFIG, config, init_weights=pretrained, lora=LORA)
    moved = changed(pretrained, result.model.state_dict())
    assert moved and all(k.startswith(("modality_trunks.audio.", "modality_heads.audio.")) for k in moved)


def test_a_killed_lora_run_resumes_to_the_same_weights(pretrained, tuned, tmp_path: Path) -> None:
    config = dataclasses.replace(FINETUNE, checkpoint_dir=str(tmp_path / "ckpt"))
    with pytest.raises(Killed):
        train_imagebind(official_kind_data(1), CONFIG, config, init_weights=pretrained, lora=LORA,
                        on_epoch=kill_after(STAGE_IMAGE_TEXT, 0))
    resumed = train_imagebind(official_kind_data(1), CONFIG, config, init_weights=pretrained, lora=LORA)
    assert_same_weights(resumed.model, tuned.model)
    assert resumed.history == tuned.history


def test_a_checkpoint_is_not_resumed_on_other_starting_weights(pretrained, tmp_path: Path) -> None:
    config = dataclasses.replace(FINETUNE, checkpoint_dir=str(tmp_path / "ckpt"))
    with pytest.raises(Killed):
        train_imagebind(official_kind_data(1), CONFIG, config, init_weights=pretrained, lora=LORA,
                        on_epoch=kill_after(STAGE_IMAGE_TEXT, 0))
    other = {k: v + 1.0 if v.is_floating_point() else v for k, v in pretrained.items()}
    with pytest.raises(ValueError, match="init_weights"):
        train_imagebind(official_kind_data(1), CONFIG, config, init_weights=other, lora=LORA)


def test_weights_of_another_architecture_are_refused(pretrained) -> None:
    wrong = {k: v for k, v in pretrained.items() if not k.startswith("modality_heads.audio.")}
    with pytest.raises(RuntimeError, match="Missing key"):
        train_imagebind(official_kind_data(1), CONFIG, FINETUNE, init_weights=wrong, lora=LORA)


def test_float_text_for_a_native_text_tower_is_refused() -> None:
    data = official_kind_data()
    data.text_emb = data.text_emb.astype(np.float32)
    with pytest.raises(ValueError, match="integer token ids"):
        train_imagebind(data, CONFIG, FINETUNE)


def run_entry(args: list[str], env: dict[str, str], nproc: int = 1) -> subprocess.CompletedProcess[str]:
    """`torchrun -m models.train_ddp ...` as a user types it (one process without torchrun)."""
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
                if nproc > 1 else [sys.executable])
    env = {**os.environ, "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(PROJECT), **env}
    return subprocess.run([*launcher, "-m", "models.train_ddp", *args], env=env, cwd=PROJECT, capture_output=True,
                          text=True, timeout=300)


def test_the_entry_point_fine_tunes_official_kind_weights_with_lora_on_two_processes_tracked_in_mlflow(
        pretrained, tmp_path: Path) -> None:
    import mlflow

    save_training_data(official_kind_data(1), tmp_path / "pairs.npz")
    torch.save(pretrained, tmp_path / "pretrained.pth")
    (tmp_path / "model.json").write_text(json.dumps(CONFIG.to_dict()))
    (tmp_path / "train.json").write_text(json.dumps(dataclasses.asdict(FINETUNE)))
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    done = run_entry(["--data", str(tmp_path / "pairs.npz"), "--out", str(tmp_path / "run"),
                      "--model-config", str(tmp_path / "model.json"), "--train-config", str(tmp_path / "train.json"),
                      "--init-weights", str(tmp_path / "pretrained.pth"), "--lora", '{"r": 4, "alpha": 8.0, "dropout": 0.0}',
                      "--track", "imagebind-lora"],
                     {"MLFLOW_TRACKING_URI": uri, "MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL": "0.5"}, nproc=2)
    assert done.returncode == 0, done.stderr[-3000:]

    model = load_model(tmp_path / "run" / "model")  # a plain ImageBind in the pretrained layout
    assert model.state_dict().keys() == pretrained.keys()
    moved = changed(pretrained, model.state_dict())
    assert moved and all(".attn." in k or k.startswith("modality_heads.") for k in moved)

    client = mlflow.MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("imagebind-lora").experiment_id])
    assert run.data.params["lora.r"] == "4" and run.data.params["world_size"] == "2"
    assert run.data.params["init_weights"].endswith("pretrained.pth")
    steps = client.get_metric_history(run.info.run_id, f"{STAGE_IMAGE_TEXT}.step_loss")
    assert len(steps) == FINETUNE.epochs_stage1 * (ROWS // FINETUNE.batch_size)
    assert {f.path for f in client.list_artifacts(run.info.run_id, "model")} == {"model/weights.pt", "model/config.json"}


def test_the_entry_point_names_a_bad_lora_field_and_a_missing_checkpoint(tmp_path: Path) -> None:
    save_training_data(official_kind_data(), tmp_path / "pairs.npz")
    (tmp_path / "train.json").write_text(json.dumps(dataclasses.asdict(FINETUNE)))
    common = ["--data", str(tmp_path / "pairs.npz"), "--out", str(tmp_path / "run"), "--train-config", str(tmp_path / "train.json")]
    done = run_entry([*common, "--lora", '{"rank": 8}'], {})
    assert done.returncode != 0 and "rank" in done.stderr and "fields are r, alpha" in done.stderr
    done = run_entry([*common, "--init-weights", str(tmp_path / "imagebind_huge.pth")], {})
    assert done.returncode != 0 and "imagebind_huge.pth: no such file" in done.stderr


def test_the_entry_point_names_the_train_fields_a_config_leaves_out(tmp_path: Path) -> None:
    """TrainConfig's params-backed fields have no default of their own (flows/settings.py holds them)."""
    save_training_data(official_kind_data(), tmp_path / "pairs.npz")
    (tmp_path / "train.json").write_text(json.dumps({"seed": 1}))
    done = run_entry(["--data", str(tmp_path / "pairs.npz"), "--out", str(tmp_path / "run"),
                      "--train-config", str(tmp_path / "train.json")], {})
    assert done.returncode != 0 and "batch_size" in done.stderr and "flywheel params --defaults" in done.stderr
