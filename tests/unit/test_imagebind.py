"""Fast tests of the ImageBind model, its losses, its training stages and its artifacts."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from models.artifacts import load_model, save_model
from models.evaluate import EvalData, evaluate_model, evaluate_slices
from models.imagebind import ImageBind, ImageBindConfig
from models.losses import contrastive_targets, pair_loss, symmetric_info_nce
from models.train import TrainingData, lr_at, random_shift, train_imagebind
from models.transforms import image_to_input, waveform_to_log_mel
from tests.unit.params_support import train_config

CONFIG = ImageBindConfig()
TINY_TRAIN = train_config(seed=0, batch_size=8, epochs_stage1=2, epochs_stage2=2)


def make_inputs(batch: int, config: ImageBindConfig = CONFIG, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random inputs of the right shape for every modality."""
    g = torch.Generator().manual_seed(seed)
    return {
        "vision": torch.rand(batch, 1, config.image_size, config.image_size, generator=g),
        "audio": torch.randn(batch, config.audio_frames, config.audio_n_mels, generator=g) * 4 - 10,
        "text": torch.randn(batch, config.text_input_dim, generator=g),
    }


def make_training_data(n: int = 24, config: ImageBindConfig = CONFIG, seed: int = 0) -> TrainingData:
    """Tiny data made through the real transforms: noise 'digits' and tones, 3 classes."""
    rng = np.random.default_rng(seed)
    label = np.arange(n, dtype=np.int64) % 3
    images = [image_to_input(rng.integers(0, 256, (8, 8), dtype=np.uint8), config.image_size) for _ in range(n)]
    t = np.arange(8000, dtype=np.float32) / 16000
    waves = [np.sin(2 * np.pi * (300 + 200 * k) * t).astype(np.float32) for k in label]
    audio = [waveform_to_log_mel(w, 16000, config.audio_n_mels, config.audio_frames) for w in waves]
    text = rng.standard_normal((n, config.text_input_dim)).astype(np.float32)
    label[::2] = -1  # half unknown
    return TrainingData(image=np.stack(images), audio=np.stack(audio), text_emb=text, label=label)


# --- model -----------------------------------------------------------------------------------


def test_forward_gives_one_embedding_per_modality_with_expected_norms() -> None:
    model = ImageBind(CONFIG).eval()
    with torch.no_grad():
        out = model(make_inputs(5))
    assert set(out) == set(CONFIG.modalities)
    for emb in out.values():
        assert emb.shape == (5, CONFIG.embed_dim)
    # Vision is unit-norm; audio and text carry their logit scale, as in Meta's postprocessors.
    torch.testing.assert_close(out["vision"].norm(dim=-1), torch.ones(5))
    torch.testing.assert_close(out["audio"].norm(dim=-1), torch.full((5,), CONFIG.audio_logit_scale))
    torch.testing.assert_close(out["text"].norm(dim=-1), torch.full((5,), CONFIG.text_logit_scale_init))


def test_forward_on_a_subset_returns_only_that_subset_and_same_values() -> None:
    model = ImageBind(CONFIG).eval()
    inputs = make_inputs(3)
    with torch.no_grad():
        full = model(inputs)
        audio_only = model({"audio": inputs["audio"]})
    assert set(audio_only) == {"audio"}
    torch.testing.assert_close(audio_only["audio"], full["audio"])


def test_forward_rejects_unknown_modality_and_wrong_shape() -> None:
    model = ImageBind(CONFIG)
    with pytest.raises(ValueError, match="unknown modalities"):
        model({"depth": torch.zeros(1, 1, 16, 16)})
    with pytest.raises(ValueError, match="audio input must be"):
        model({"audio": torch.zeros(2, CONFIG.audio_n_mels, CONFIG.audio_frames)})  # transposed


def test_modality_keyed_structure_matches_meta_layout() -> None:
    model = ImageBind(CONFIG)
    for name in ("modality_preprocessors", "modality_trunks", "modality_heads", "modality_postprocessors"):
        assert set(getattr(model, name).keys()) == set(CONFIG.modalities)
    keys = model.state_dict().keys()
    assert "modality_postprocessors.text.1.log_logit_scale" in keys
    assert "modality_postprocessors.audio.1.log_logit_scale" in keys  # a buffer: fixed scale
    learnable = {n for n, _ in model.named_parameters()}
    assert "modality_postprocessors.text.1.log_logit_scale" in learnable
    assert "modality_postprocessors.audio.1.log_logit_scale" not in learnable
    assert model.logit_scale("vision") == 1.0
    assert model.logit_scale("audio") == pytest.approx(CONFIG.audio_logit_scale)


def test_config_round_trips_and_rejects_bad_values() -> None:
    config = ImageBindConfig(embed_dim=32, audio_depth=1)
    assert ImageBindConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="unknown ImageBindConfig fields"):
        ImageBindConfig.from_dict({**config.to_dict(), "embed_dims": 3})
    with pytest.raises(ValueError, match="patch_size"):
        ImageBindConfig(image_size=16, patch_size=5)


def test_save_load_round_trip_gives_identical_embeddings(tmp_path: Path) -> None:
    torch.manual_seed(1)
    model = ImageBind(ImageBindConfig(embed_dim=32)).eval()
    save_model(model, tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    assert loaded.config == model.config
    inputs = make_inputs(4, model.config)
    with torch.no_grad():
        expected, got = model(inputs), loaded(inputs)
    for modality in CONFIG.modalities:
        assert torch.equal(expected[modality], got[modality])


def test_load_model_names_missing_files(tmp_path: Path) -> None:
    save_model(ImageBind(CONFIG), tmp_path)
    (tmp_path / "weights.pt").unlink()
    with pytest.raises(FileNotFoundError, match="weights.pt"):
        load_model(tmp_path)


def test_load_model_is_strict_about_architecture(tmp_path: Path) -> None:
    save_model(ImageBind(CONFIG), tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(dataclasses.replace(CONFIG, audio_depth=3).to_dict()))
    with pytest.raises(RuntimeError, match="Missing key"):
        load_model(tmp_path)


# --- losses ----------------------------------------------------------------------------------


def test_info_nce_is_lower_for_aligned_pairs_than_for_shuffled() -> None:
    g = torch.Generator().manual_seed(0)
    a = torch.nn.functional.normalize(torch.randn(16, 8, generator=g), dim=-1) * 10
    aligned = pair_loss(a, a / 10)
    shuffled = pair_loss(a, a[torch.randperm(16, generator=g)] / 10)
    assert aligned < shuffled
    assert aligned < 0.5  # nearly one-hot softmax at scale 10 on distinct random directions


def test_contrastive_targets_adds_known_same_label_positives_only() -> None:
    labels = torch.tensor([3, 3, -1, -1, 5])
    targets = contrastive_targets(5, labels)
    expected = torch.tensor(
        [
            [0.5, 0.5, 0, 0, 0],
            [0.5, 0.5, 0, 0, 0],
            [0, 0, 1, 0, 0],  # unknown labels never match each other
            [0, 0, 0, 1, 0],
            [0, 0, 0, 0, 1],
        ]
    )
    torch.testing.assert_close(targets, expected)
    torch.testing.assert_close(contrastive_targets(3), torch.eye(3))


def test_label_aware_loss_does_not_penalise_same_class_pairs() -> None:
    # Two rows of the same class whose embeddings are swapped: plain InfoNCE calls it a
    # mistake, label-aware InfoNCE does not (both are positives).
    a = torch.eye(4) * 10
    b = torch.eye(4)[[1, 0, 2, 3]]
    labels = torch.tensor([7, 7, 1, 2])
    assert pair_loss(a, b, labels) < pair_loss(a, b)


def test_symmetric_info_nce_rejects_non_square_logits() -> None:
    with pytest.raises(ValueError, match="square"):
        symmetric_info_nce(torch.zeros(3, 4))


# --- training --------------------------------------------------------------------------------


def test_training_data_validate_names_the_bad_array() -> None:
    data = make_training_data(6)
    bad = dataclasses.replace(data, audio=data.audio[:5])
    with pytest.raises(ValueError, match="audio"):
        bad.validate()
    bad = dataclasses.replace(data, text_emb=data.text_emb[:, :100])
    with pytest.raises(ValueError, match="text_emb"):
        bad.validate(CONFIG)
    bad = dataclasses.replace(data, label=data.label.astype(np.float32))
    with pytest.raises(ValueError, match="integer"):
        bad.validate()


def test_stage_two_leaves_the_vision_tower_unchanged() -> None:
    data = make_training_data()
    only_stage1 = train_imagebind(data, CONFIG, dataclasses.replace(TINY_TRAIN, epochs_stage2=0)).model
    both = train_imagebind(data, CONFIG, TINY_TRAIN).model
    before, after = only_stage1.state_dict(), both.state_dict()
    vision_keys = [k for k in before if ".vision." in k]
    assert vision_keys
    for key in vision_keys:
        assert torch.equal(before[key], after[key]), key
    assert any(not torch.equal(before[k], after[k]) for k in before if ".audio." in k)
    assert not any(p.requires_grad for p in both.tower_parameters("vision"))


def test_stage_one_never_touches_audio_and_stage_two_never_touches_text() -> None:
    data = make_training_data()
    torch.manual_seed(TINY_TRAIN.seed)
    initial = ImageBind(CONFIG).state_dict()  # same seed → same initial weights as training
    stage1 = train_imagebind(data, CONFIG, dataclasses.replace(TINY_TRAIN, epochs_stage2=0)).model.state_dict()
    both = train_imagebind(data, CONFIG, TINY_TRAIN).model.state_dict()
    assert all(torch.equal(initial[k], stage1[k]) for k in initial if ".audio." in k)
    assert all(torch.equal(stage1[k], both[k]) for k in initial if ".text." in k)


def test_training_is_deterministic_and_reports_history() -> None:
    data = make_training_data()
    seen: list[tuple[str, int]] = []
    first = train_imagebind(data, CONFIG, TINY_TRAIN, on_epoch=lambda s, e, m: seen.append((s, e)))
    second = train_imagebind(data, CONFIG, TINY_TRAIN)
    assert [(h["stage"], h["epoch"]) for h in first.history] == seen
    assert seen == [("image_text", 0), ("image_text", 1), ("audio_image", 0), ("audio_image", 1)]
    assert [h["loss"] for h in first.history] == [h["loss"] for h in second.history]
    assert first.seconds > 0
    for key, value in first.model.state_dict().items():
        assert torch.equal(value, second.model.state_dict()[key]), key


def test_training_restores_the_thread_count() -> None:
    before = torch.get_num_threads()
    train_imagebind(make_training_data(), CONFIG, dataclasses.replace(TINY_TRAIN, epochs_stage2=0))
    assert torch.get_num_threads() == before


def test_random_shift_moves_content_without_changing_it() -> None:
    images = torch.zeros(64, 1, 6, 6)
    images[:, 0, 2:4, 2:4] = 1.0  # a 2×2 blob in the middle, one pixel from any edge after a shift
    shifted = random_shift(images, 1, torch.Generator().manual_seed(0))
    assert shifted.shape == images.shape
    torch.testing.assert_close(shifted.sum(dim=(1, 2, 3)), torch.full((64,), 4.0))
    assert not torch.equal(shifted, images)
    assert torch.equal(random_shift(images, 0, torch.Generator()), images)


def test_lr_schedule_warms_up_then_decays_to_the_floor() -> None:
    lrs = [lr_at(step, 100, 1.0, 0.1, 0.05) for step in range(100)]
    assert lrs[0] == pytest.approx(0.1)
    assert max(lrs) == pytest.approx(1.0)
    assert lrs[-1] == pytest.approx(0.05, abs=1e-3)
    assert all(x >= y for x, y in zip(lrs[10:], lrs[11:]))


# --- evaluation ------------------------------------------------------------------------------


def test_evaluate_model_reports_headline_metrics_and_slices() -> None:
    data = make_training_data(12)
    model = ImageBind(CONFIG)
    label = np.arange(12, dtype=np.int64) % 3
    eval_data = EvalData(image=data.image, label=label, groups={"source": ["a", "b"] * 6}, audio=data.audio)
    prompts = np.random.default_rng(0).standard_normal((3, CONFIG.text_input_dim)).astype(np.float32)
    metrics = evaluate_model(model, eval_data, prompts)
    for key in ("zero_shot_image_acc", "zero_shot_audio_acc", "audio_to_image_r1"):
        assert 0.0 <= metrics[key] <= 1.0
    slices = evaluate_slices(model, eval_data, prompts)
    assert {"per_class_image_acc_0", "per_class_audio_acc_2", "per_source_audio_acc_a", "per_source_image_acc_b"} <= set(slices)
    only_images = EvalData(image=data.image, label=label)
    assert set(evaluate_model(model, only_images, prompts)) == {"zero_shot_image_acc", "n_eval"}
    assert not any("audio" in name for name in evaluate_slices(model, only_images, prompts))


def test_evaluate_model_scores_a_perfect_model_as_perfect() -> None:
    # Identity-like toy: embed each input as its class one-hot; every metric must be 1.
    class OneHot(ImageBind):
        def forward(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
            out = {}
            for modality, value in inputs.items():
                flat = value.reshape(value.shape[0], -1)
                out[modality] = torch.nn.functional.one_hot(flat[:, 0].long(), self.config.embed_dim).float()
            return out

    model = OneHot(CONFIG)
    label = np.array([0, 1, 2, 1], dtype=np.int64)
    image = np.zeros((4, 1, 16, 16), dtype=np.float32)
    image[:, 0, 0, 0] = label
    audio = np.zeros((4, 100, 40), dtype=np.float32)
    audio[:, 0, 0] = label
    prompts = np.zeros((3, 384), dtype=np.float32)
    prompts[:, 0] = [0, 1, 2]
    metrics = evaluate_model(model, EvalData(image=image, label=label, audio=audio), prompts)
    assert metrics["zero_shot_image_acc"] == metrics["zero_shot_audio_acc"] == metrics["audio_to_image_r1"] == 1.0


def test_eval_data_rejects_unknown_labels() -> None:
    data = make_training_data(4)
    with pytest.raises(ValueError, match="known"):
        EvalData(image=data.image, label=np.array([0, -1, 1, 2]), audio=data.audio).validate()
