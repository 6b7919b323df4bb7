"""The gate's targets with really trained ImageBind models on the demo data, judged by the shipped
params.yaml policy on the real golden set (`build_golden_set`: 400 rows, DVC-tracked):
- champion: the shipped recipe (40 + 30 epochs) on 500 demo rows, a brief, middling model;
- sabotaged: the same recipe and rows with the images shuffled across rows, so neither stage's
  (image, text) / (audio, image) pairs match: it must be rejected, with the failing checks named;
- better: the same recipe on 1000 rows (one batch of the example): it must pass every check, slices included.
  On 600 rows of the wide voice pool (issue 16) it heard only 4 % of one golden class's audio.

Training is deterministic on one machine (fixed seeds, one thread; the bootstrap is seeded too), not
across CPUs: the float paths differ. Only the p95 latency varies between runs (with machine load), so it
is judged against bounds no load reaches. Trained on the demo's human labels alone (20 % of rows), the
seed-2 "better" model passed on one machine and on another heard 3 of 39 golden "nine"s (audio class 9
at 0.077, under the 0.1 floor); with the labels the label stage gives training (the labelling functions
through the label model, the unsure ones left unknown) it passes there, and so do seeds 0 and 1 (whose
human-labels-only models failed slices on an earlier machine), each change's interval +0.17 or more above zero.
A class slice holds ~40 golden rows (a quarter of them the held-out engine), so its interval is about
+-0.2 wide. This test pins seed 2 for all three models.
"""

from __future__ import annotations

import os
from dataclasses import replace

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np
import pytest

from features.clean import clean_batch
from features.label import build_labels
from features.ingest import ingest_batch
from flows.model_stages import build_golden_set
from flows.settings import load_settings
from flows import stage_config
from flows.stage_config import clean_params, gate_policy, input_spec, label_params, labelling_functions
from models.gate import decide
from models.gate_scoring import golden_groups, score_models
from models.inputs import build_model_inputs
from models.text import encode_class_prompts, encode_texts
from models.train import TrainingData, train_imagebind
from tests.conftest import PROJECT, with_unreachable_latency_bounds

pytestmark = pytest.mark.slow

TRAIN_ROWS, CHAMPION_ROWS = 1000, 500  # the example's batch (demo.samples) and half of it: twice the data
SEED = 2  # training seed of all three models: see the module docstring for 0 and 1
SHUFFLE_SEED = 7


def demo_training_data(demo_batch_factory, settings, tmp_path) -> TrainingData:
    """A demo batch through ingest → clean → model inputs, as the lifecycle prepares it; labels as the label
    stage makes them before any champion exists: the demo's human labels (20 % of rows) and the label model's
    over the task's labelling functions, those below the review threshold left unknown, as training reads them."""
    landing = demo_batch_factory(samples=TRAIN_ROWS, seed=5, fault_rate=0.0)
    raw = ingest_batch(landing, tmp_path / "raw")
    cleaned = clean_batch(raw.batch_dir, tmp_path / "clean", clean_params(settings))
    rows = cleaned.rows
    rows = rows[rows["image"].notna() & rows["audio"].notna() & rows["caption"].notna()].reset_index(drop=True)
    inputs = build_model_inputs(cleaned.batch_dir, rows, input_spec(settings))
    labels, _ = build_labels(rows, settings.task, None, label_params(settings), labelling_functions(settings))
    trusted = labels["label"].where(labels["label_confidence"] >= settings.params.label.review_threshold)
    return TrainingData(image=inputs.image, audio=inputs.audio, text_emb=encode_texts(list(inputs.caption)),
                        label=trusted.astype("float64").fillna(-1).to_numpy(dtype=np.int64))


def first_rows(data: TrainingData, n: int, shuffled_images: bool = False) -> TrainingData:
    image = data.image[:n]
    if shuffled_images:  # a broken join: each image lands on another row's caption, audio and label
        image = image[np.random.default_rng(SHUFFLE_SEED).permutation(n)]
    return TrainingData(image=image, audio=data.audio[:n], text_emb=data.text_emb[:n], label=data.label[:n])


@pytest.fixture(scope="module")
def judged(demo_batch_factory, tmp_path_factory):
    settings = load_settings(tmp_path_factory.mktemp("home"), PROJECT / "params.yaml")
    data = demo_training_data(demo_batch_factory, settings, tmp_path_factory.mktemp("data"))
    assert len(data) >= TRAIN_ROWS - 20, len(data)  # the clean stage may drop a few near duplicates
    tr = settings.params.train
    model_config = stage_config.imagebind_config(tr, input_spec(settings))  # as the family builds it
    recipe = replace(stage_config.train_config(tr, settings.params.clean.sample_rate), seed=SEED)
    training = {"champion": first_rows(data, CHAMPION_ROWS), "sabotaged": first_rows(data, CHAMPION_ROWS, True),
                "better": data}
    models = {name: train_imagebind(rows, model_config, recipe).model for name, rows in training.items()}
    golden, _ = build_golden_set(settings)
    scores = score_models(models, golden, encode_class_prompts(settings.task.prompts), settings.params.gate.latency_items)
    policy, groups = with_unreachable_latency_bounds(gate_policy(settings)), golden_groups(golden, settings.task.classes)
    return {name: decide(scores[name], scores["champion"], policy, groups) for name in ("sabotaged", "better")}


def test_a_candidate_trained_on_shuffled_pairs_is_rejected_with_the_failing_checks_named(judged):
    sabotaged = judged["sabotaged"]
    assert not sabotaged.passed
    failed = {c.name for c in sabotaged.failed_checks()}
    headline = {f"{metric} {kind}" for metric in ("zero_shot_image_acc", "zero_shot_audio_acc", "audio_to_image_r1")
                for kind in ("min", "change")}
    assert headline <= failed, sorted(failed)  # below every bound and clearly worse than the champion
    assert all(name in sabotaged.reason for name in headline)
    assert {c.metric for c in sabotaged.failed_checks() if c.slice} >= {"zero_shot_image_acc", "zero_shot_audio_acc"}
    assert sabotaged.challenger["zero_shot_image_acc"] < 0.2  # near chance (0.1): the pairing carried the signal


def test_a_genuinely_better_candidate_passes_every_check(judged):
    better = judged["better"]
    assert better.passed, better.reason
    for metric in ("zero_shot_image_acc", "zero_shot_audio_acc", "audio_to_image_r1"):
        change = next(c for c in better.checks if c.name == f"{metric} change")
        assert change.interval[0] > 0, change.explain()  # a real gain: the whole interval is above zero
    assert any(c.slice and c.slice.startswith("voice_group=") for c in better.checks)
    assert any(c.slice and c.slice.startswith("class=") for c in better.checks)
