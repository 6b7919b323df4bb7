"""The model core takes its modalities from the data: IMU and depth rows, RGB images, image + text alone.

Tiny synthetic tasks of 3 classes (a bright square in a class's quadrant, an IMU sine of a class's
frequency, captions near a class's centre): each trains in about a second, and what is checked is
what a user of such a task sees: the stages run, the towers exist, the metrics are named after the
data's modalities, a gate on a modality the task lacks says "not applicable".
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from models.evaluate import EvalData, eval_data_from_inputs, evaluate_model, evaluate_slices
from models.gate import NOT_APPLICABLE, MetricThreshold, decide
from models.gate_scoring import golden_groups, score_models
from models.families import IMAGEBIND_METRICS
from models.imagebind import ImageBindConfig, config_modalities
from models.inputs import build_model_inputs, load_model_inputs, modalities_present, save_model_inputs
from models.train import TrainingData, train_imagebind
from tests.unit.params_support import input_spec, train_config, policy_at_defaults

K = 3  # classes
IMU_LENGTH = 32
CENTRES = np.random.default_rng(99).standard_normal((K, 384)).astype(np.float32)  # class prompts' embeddings
TRAIN = train_config(seed=0, batch_size=20, epochs_stage1=20, epochs_stage2=20, image_shift=0)


def tiny_config(present: list[str], channels: int = 1) -> ImageBindConfig:
    return ImageBindConfig(embed_dim=16, modalities=config_modalities(present), image_size=8, image_channels=channels,
                           patch_size=4, vision_width=16, vision_heads=2, vision_depth=1, audio_width=16, audio_heads=2,
                           audio_depth=1, imu_length=IMU_LENGTH, imu_patch_size=8, imu_width=16, imu_heads=2,
                           imu_depth=1, imu_head_dropout=0.0)


def squares(label: np.ndarray, rng: np.random.Generator, channels: int = 1) -> np.ndarray:
    """(N, C, 8, 8): class k lights quadrant k on an exactly dark background (RGB: class k's colour too)."""
    image = np.zeros((len(label), channels, 8, 8), dtype=np.float32)
    for i, k in enumerate(label):
        r, c = 4 * (k % 2), 4 * (k // 2)
        ink = rng.uniform(0.5, 1.0, (4, 4))
        if channels == 1:
            image[i, 0, r : r + 4, c : c + 4] = ink
        else:
            image[i, k, 2:6, 2:6] = ink  # same place, another colour: only the colour tells the classes apart
    return image


def imu_series(label: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(IMU_LENGTH) / IMU_LENGTH
    clean = np.stack([np.tile(np.sin(2 * np.pi * (1 + 2 * k) * t), (6, 1)) for k in label])
    return (clean + rng.standard_normal(clean.shape) * 0.3).astype(np.float32)


def rows(n: int, seed: int, imu: bool = True, channels: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    label = np.arange(n, dtype=np.int64) % K
    out = {"image": squares(label, rng, channels), "label": label,
           "text_emb": (CENTRES[label] + rng.standard_normal((n, 384)) * 0.3).astype(np.float32)}
    if imu:
        out["imu"] = imu_series(label, rng)
    return out


def test_imu_rows_bind_to_the_images_in_their_own_stage_and_are_scored():
    train = rows(60, seed=0)
    result = train_imagebind(TrainingData(train["image"], train["text_emb"], train["label"], imu=train["imu"]),
                             tiny_config(["imu"]), TRAIN)
    assert "imu" in result.model.modality_trunks and "audio" not in result.model.modality_trunks
    assert [h["stage"] for h in result.history] == ["image_text"] * 20 + ["imu_image"] * 20
    held_out = rows(30, seed=1)
    metrics = evaluate_model(result.model, EvalData(held_out["image"], held_out["label"], imu=held_out["imu"]), CENTRES)
    assert set(metrics) == {"zero_shot_image_acc", "zero_shot_imu_acc", "imu_to_image_r1", "n_eval"}
    # chance is 1/3; an imu tower left untrained, or bound to nothing, stays there
    assert metrics["imu_to_image_r1"] >= 0.8, metrics
    assert metrics["zero_shot_imu_acc"] >= 0.8, metrics  # emergent: no (imu, text) pair was trained on


def test_image_and_text_alone_train_one_stage_and_report_no_audio_metric():
    train = rows(40, seed=0, imu=False)
    config = tiny_config(["vision", "text"])
    assert config.modalities == ("vision", "text")
    result = train_imagebind(TrainingData(train["image"], train["text_emb"], train["label"]), config,
                             dataclasses.replace(TRAIN, epochs_stage1=4))
    assert {h["stage"] for h in result.history} == {"image_text"}
    held_out = rows(12, seed=1, imu=False)
    data = EvalData(held_out["image"], held_out["label"], groups={"source": ["scanner", "phone"] * 6})
    assert set(evaluate_model(result.model, data, CENTRES)) == {"zero_shot_image_acc", "n_eval"}
    slices = evaluate_slices(result.model, data, CENTRES)
    assert set(slices) == {*(f"per_class_image_acc_{k}" for k in range(K)),
                           "per_source_image_acc_phone", "per_source_image_acc_scanner"}


def test_a_config_without_the_data_s_modality_is_refused_naming_it():
    train = rows(10, seed=0)
    with pytest.raises(ValueError, match=r"\['imu'\].*config_modalities"):
        train_imagebind(TrainingData(train["image"], train["text_emb"], train["label"], imu=train["imu"]),
                        tiny_config(["vision", "text"]), TRAIN)
    assert config_modalities(["vision", "text", "audio"]) == ("vision", "audio", "text")  # the demo's build order
    with pytest.raises(ValueError, match="unknown modalities \\['smell'\\]"):
        config_modalities(["smell"])


def write_clean_rows(clean: Path, colours: list[tuple[int, int, int]] | None = None, sensors: bool = False) -> pd.DataFrame:
    """A clean folder as the clean stage leaves it: images/*.png, sensors/<stem>.<kind>.npy, and the table."""
    (clean / "images").mkdir(parents=True)
    (clean / "sensors").mkdir()
    table = []
    rng = np.random.default_rng(0)
    for i, colour in enumerate(colours or [(255, 0, 0), (0, 0, 255), (0, 255, 0), (255, 255, 255)]):
        Image.new("RGB", (12, 10), colour).save(clean / "images" / f"s{i}.png")
        row = {"sample_id": f"s{i}", "caption": f"caption {i}", "image": f"images/s{i}.png", "audio": None,
               "depth": None, "thermal": None, "imu": None}
        if sensors and i % 2 == 0:  # half the rows carry depth and imu
            np.save(clean / "sensors" / f"s{i}.depth.npy", rng.uniform(500, 4000, (24, 32)))  # millimetres
            np.save(clean / "sensors" / f"s{i}.imu.npy", rng.standard_normal((6, 50)))  # shorter than imu_length
            row.update(depth=f"sensors/s{i}.depth.npy", imu=f"sensors/s{i}.imu.npy")
        table.append(row)
    return pd.DataFrame(table)


def test_rgb_files_keep_their_colour_and_grayscale_tasks_get_luminance(tmp_path):
    table = write_clean_rows(tmp_path)
    rgb = build_model_inputs(tmp_path, table, input_spec(image_size=8, image_channels=3))
    assert rgb.image.shape == (4, 3, 8, 8)
    np.testing.assert_allclose(rgb.image[0, :, 3, 3], [1.0, 0.0, 0.0])  # red stays red
    np.testing.assert_allclose(rgb.image[1, :, 3, 3], [0.0, 0.0, 1.0])
    gray = build_model_inputs(tmp_path, table, input_spec(image_size=8))
    assert gray.image.shape == (4, 1, 8, 8)
    assert gray.image[3, 0, 0, 0] == pytest.approx(1.0) and gray.image[0, 0, 0, 0] < 0.5  # white bright, red dimmer
    with pytest.raises(ValueError, match="image_channels must be 1 .* or 3 .*, got 2"):
        input_spec(image_channels=2)


def test_rgb_inputs_train_a_three_channel_vision_tower():
    train = rows(60, seed=0, imu=False, channels=3)
    assert train["image"].shape == (60, 3, 8, 8)
    config = tiny_config(["vision", "text"], channels=3)
    result = train_imagebind(TrainingData(train["image"], train["text_emb"], train["label"]), config,
                             dataclasses.replace(TRAIN, epochs_stage2=0))
    assert result.model.modality_preprocessors["vision"].rgbt_stem.proj.in_channels == 3
    held_out = rows(30, seed=1, imu=False, channels=3)
    metrics = evaluate_model(result.model, EvalData(held_out["image"], held_out["label"]), CENTRES)
    assert metrics["zero_shot_image_acc"] >= 0.8, metrics  # the classes differ only in colour


def test_sensor_files_become_masked_inputs_that_round_trip(tmp_path):
    table = write_clean_rows(tmp_path / "clean", sensors=True)
    spec = input_spec(image_size=8, depth_size=8, imu_length=IMU_LENGTH)
    inputs = build_model_inputs(tmp_path / "clean", table, spec)
    assert inputs.depth.shape == (4, 1, 8, 8) and inputs.imu.shape == (4, 6, IMU_LENGTH)
    assert inputs.thermal.shape == (4, 1, 16, 16) and not inputs.has_thermal.any() and not inputs.thermal.any()
    assert list(inputs.has_depth) == list(inputs.has_imu) == [True, False, True, False]
    assert inputs.depth[0].min() == 0.0 and inputs.depth[0].max() == pytest.approx(1.0)  # millimetres scaled to [0, 1]
    assert not inputs.imu[0, :, 50:].any() and inputs.imu[0, :, :50].any()  # padded after the 50 samples it had
    assert modalities_present(inputs) == ("vision", "text", "depth", "imu")
    save_model_inputs(tmp_path / "inputs.npz", inputs)
    loaded = load_model_inputs(tmp_path / "inputs.npz")
    np.testing.assert_array_equal(loaded.imu, inputs.imu)
    np.testing.assert_array_equal(loaded.has_depth, inputs.has_depth)
    # a golden set whose rows carry depth only in part cannot be scored row by row: refused, naming it
    with pytest.raises(ValueError, match="2 of 4 evaluation rows lack depth"):
        eval_data_from_inputs(inputs, np.arange(4) % K)
    golden = eval_data_from_inputs(inputs.take(np.array([0, 2])), np.array([0, 1]), {"source": ["a", "b"]})
    assert set(golden.bound()) == {"depth", "imu"} and golden.audio is None and golden.caption == ["caption 0", "caption 2"]


def test_the_gate_reports_an_audio_threshold_as_not_applicable_to_an_image_text_task():
    train = rows(40, seed=0, imu=False)
    model = train_imagebind(TrainingData(train["image"], train["text_emb"], train["label"]),
                            tiny_config(["vision", "text"]), dataclasses.replace(TRAIN, epochs_stage1=10)).model
    held_out = rows(30, seed=1, imu=False)
    golden = EvalData(held_out["image"], held_out["label"], groups={"source": ["a", "b", "c"] * 10})
    scores = score_models({"challenger": model}, golden, CENTRES, latency_items=2)["challenger"]
    policy = policy_at_defaults(thresholds={"zero_shot_image_acc": MetricThreshold(min=0.5),
                                    "zero_shot_audio_acc": MetricThreshold(min=0.9)},
                        slices={"source": {"zero_shot_audio_acc": MetricThreshold(min=0.9)}},
                        directions=IMAGEBIND_METRICS)
    decision = decide(scores, None, policy, golden_groups(golden, [str(k) for k in range(K)]))
    assert decision.passed, decision.reason
    [audio, audio_slice] = [c for c in decision.checks if c.metric == "zero_shot_audio_acc"]
    assert audio.kind == audio_slice.kind == NOT_APPLICABLE and audio.passed
    assert "zero_shot_audio_acc: not applicable (the golden set has no audio)" in decision.reason
    assert any(c.metric == "zero_shot_image_acc" and c.kind == "min" for c in decision.checks)  # still judged
    # a metric of a modality the golden set has, but the model never computed, is still an error
    with pytest.raises(ValueError, match="was not evaluated"):
        decide(dataclasses.replace(scores, not_applicable={}), None, policy, golden_groups(golden, [str(k) for k in range(K)]))


def test_depth_and_imu_rows_train_one_stage_each_in_order():
    train = rows(40, seed=0)
    depth = train["image"][:, :1] * 0.5  # (N, 1, 8, 8) maps, as the transform stage writes them
    config = dataclasses.replace(tiny_config(["imu", "depth"]), depth_image_size=8, depth_patch_size=4, depth_width=16,
                                 depth_heads=2, depth_depth=1)
    assert config.modalities == ("vision", "text", "depth", "imu")
    data = TrainingData(train["image"], train["text_emb"], train["label"], depth=depth, imu=train["imu"])
    result = train_imagebind(data, config, dataclasses.replace(TRAIN, epochs_stage1=2, epochs_stage2=2))
    assert [h["stage"] for h in result.history] == ["image_text"] * 2 + ["depth_image"] * 2 + ["imu_image"] * 2
    metrics = evaluate_model(result.model, EvalData(train["image"], train["label"], depth=depth, imu=train["imu"]), CENTRES)
    assert {"zero_shot_depth_acc", "depth_to_image_r1", "zero_shot_imu_acc", "imu_to_image_r1"} <= set(metrics)
    with pytest.raises(ValueError, match=r"depth rows must have shape \(1, 8, 8\)"):
        train_imagebind(dataclasses.replace(data, depth=np.zeros((40, 1, 4, 4), np.float32)), config, TRAIN)
