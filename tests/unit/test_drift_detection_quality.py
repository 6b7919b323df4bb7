"""Detection quality on real demo data (a small benchmarks/drift_detection.py): a champion trained on
a reference window of the demo's batch size with the shipped recipe (params.yaml's `train:`, speech
augmentation and CMVN included: on 600 rows without them, the model heard training voices it then
failed on fresh ones, and a clean batch's audio accuracy fell 0.24 below the window's); a rotated batch is caught naming the image modality, a
no-drift batch with a fresh seed raises no alarm, under params.yaml's thresholds."""

from __future__ import annotations

from pathlib import Path

import pytest

from examples.digits.demo import generate_demo_batch
from features.transform import CATEGORICAL_FEATURES, NUMERIC_FEATURES
from flows.settings import load_params
from monitoring.checks import run_checks
from monitoring.drift_quality import prepare_window, train_reference_model, zero_shot_accuracy
from monitoring.observations import build_monitor_data
from tests.conftest import PROJECT
from tests.unit.task_support import example_task
from tests.unit.params_support import clean_params, input_spec

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def judge(tmp_path_factory):
    from flows import monitor_stage, stage_config
    from models.text import encode_class_prompts

    params = load_params(PROJECT / "params.yaml")

    class _Settings:  # check_params reads settings.params.monitor only
        pass

    _Settings.params = params
    check_params = monitor_stage.check_params(_Settings())
    root, spec, task = tmp_path_factory.mktemp("drift-quality"), input_spec(), example_task()
    clean = clean_params(task)
    generate_demo_batch(root / "landing-ref", samples=params.demo.samples, seed=1000)
    features, inputs, labels = prepare_window(root / "landing-ref", root / "lake", spec, clean)
    tr = params.train
    model = train_reference_model(
        inputs, labels,
        stage_config.imagebind_config(tr, spec),
        stage_config.train_config(tr, params.clean.sample_rate))
    prompts = encode_class_prompts(task.prompts)
    accuracy = zero_shot_accuracy(model, inputs, labels, prompts)
    reference = build_monitor_data(features, inputs, model, prompts, labels)

    def run(name: str, seed: int, drift: str | None):
        generate_demo_batch(root / name, samples=300, seed=seed, drift=drift)
        features, inputs, labels = prepare_window(root / name, root / "lake", spec, clean)
        current = build_monitor_data(features, inputs, model, prompts, labels)
        return run_checks(reference, current, list(NUMERIC_FEATURES), list(CATEGORICAL_FEATURES), check_params)

    run.accuracy = accuracy
    return run


def test_the_champion_stand_in_predicts_the_class(judge):
    # ~150 voices of two engines in 1000 rows: image 0.96, audio 0.66 measured (chance 0.1). One window is one draw:
    # the same recipe heard its own window's audio (all rows) at 0.72 / 0.82 / 0.86 / 0.79 on windows of seeds
    # 1000-1003, and at 0.86 / 0.84 / 0.91 / 0.73 before festival's ona joined the voice pool (session 11)
    assert judge.accuracy["image"] >= 0.8 and judge.accuracy["audio"] >= 0.6, judge.accuracy


def test_a_rotated_batch_is_caught_naming_the_image_modality(judge):
    result = judge("drift-rotation", 2002, "rotation")
    assert result.drift_detected
    image = [f for f in result.findings if f.split(":", 1)[1].startswith("img_") or f.endswith(":image")]
    assert "embedding_drift:image" in image and any(f.startswith("data_drift:img_") for f in image), result.findings
    assert not any(f.split(":", 1)[1].startswith(("aud_", "cap_")) for f in result.findings), result.findings


def test_a_no_drift_batch_with_a_fresh_seed_raises_no_alarm(judge):
    result = judge("clean-5000", 5000, None)
    assert not result.drift_detected, result.findings
    assert result.findings == []
