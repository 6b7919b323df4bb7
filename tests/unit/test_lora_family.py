"""The `lora` family switch: params.yaml chooses it, the saved model names it, the gate keeps families apart."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from flows.settings import load_params
from tests.conftest import PROJECT, example_params
from tests.unit.params_support import classifier_training, lora_settings

CAPTIONS = [template.format(word=word) for word in ("zero", "one", "two", "three", "four", "five", "six", "seven",
                                                    "eight", "nine")
            for template in ("the digit {word}", "a handwritten {word}", "scan of a {word}")]
LABELS = np.repeat(np.arange(10), 3)
N_CLASSES = 10  # the digits example's classes
# A task that is not the digits: three named classes, a caption naming each.
SHAPE_CAPTIONS = [template.format(shape=shape) for shape in ("circle", "square", "triangle")
                  for template in ("a {shape}", "a drawing of a {shape}", "the {shape} shape", "one {shape}")]
SHAPE_LABELS = np.repeat(np.arange(3), 4)


def write_params(tmp_path, **train):
    params = example_params()
    params["train"].update(train)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def test_shipped_params_train_imagebind_under_the_old_registered_name():
    params = load_params(PROJECT / "params.yaml")
    assert params.train.family == "imagebind" and params.registry.model_name == "flywheel-imagebind"


def test_the_lora_family_gets_its_own_registered_model_unless_a_name_is_set(tmp_path):
    assert load_params(write_params(tmp_path, family="lora")).registry.model_name == "flywheel-lora"
    params = yaml.safe_load(write_params(tmp_path, family="lora").read_text())
    params["registry"]["model_name"] = "captions"
    (tmp_path / "named.yaml").write_text(yaml.safe_dump(params))
    assert load_params(tmp_path / "named.yaml").registry.model_name == "captions"


def test_an_unknown_family_stops_at_load_naming_the_value_and_the_choices(tmp_path):
    with pytest.raises(ValueError, match=r"train\.family[\s\S]*unknown model family 'bert'[\s\S]*\['imagebind', 'lora'"
                                         r"[\s\S]*package\.module:Attribute"):
        load_params(write_params(tmp_path, family="bert"))
    with pytest.raises(ValueError, match=r"train\.lora\.r"):
        load_params(write_params(tmp_path, lora={"r": 0}))


def test_each_family_is_gated_on_its_own_metrics(tmp_path):
    from flows.settings import load_settings
    from flows.stage_config import gate_policy

    lora = load_settings(tmp_path, write_params(tmp_path, family="lora"))
    assert set(gate_policy(lora).thresholds) == {"caption_acc", "p95_latency_ms", "model_size_mb"}
    assert set(gate_policy(lora).slices) == {"class"}
    imagebind = load_settings(tmp_path, PROJECT / "params.yaml")
    assert "zero_shot_audio_acc" in gate_policy(imagebind).thresholds
    assert gate_policy(imagebind, "lora").thresholds == gate_policy(lora).thresholds
    params = yaml.safe_load(write_params(tmp_path, family="lora").read_text())
    params["gate"]["families"]["lora"]["thresholds"] = {}
    (tmp_path / "no-gate.yaml").write_text(yaml.safe_dump(params))
    with pytest.raises(ValueError, match=r"gate\.families\.lora\.thresholds is empty"):
        gate_policy(load_settings(tmp_path, tmp_path / "no-gate.yaml"))


@pytest.fixture(scope="module")
def trained():
    from models.lora_family import train_caption_classifier

    return train_caption_classifier(CAPTIONS, LABELS, lora_settings(), classifier_training(steps=12, batch_size=10, lr=3e-3),
                                    N_CLASSES)


def test_training_merges_the_adapters_and_learns(trained):
    from models.family import family_of
    from models.lora_family import evaluate_caption_classifier

    assert family_of(trained.model).name == "lora"
    assert not any("lora_" in name for name, _ in trained.model.named_parameters())  # merged: no adapter left
    assert trained.trainable_parameters / trained.total_parameters < 0.01
    assert len(trained.losses) == 12 and trained.losses[-1] < trained.losses[0]
    assert evaluate_caption_classifier(trained.model, CAPTIONS, LABELS)["caption_acc"] > 0.3  # chance 0.1


def test_unlabelled_rows_never_reach_training():
    from models.lora_family import train_caption_classifier

    with pytest.raises(ValueError, match=r"class indices 0\.\.9 .*found \[-1\] outside that range"):
        train_caption_classifier(["a", "b"], np.array([0, -1]), lora_settings(), classifier_training(steps=1), N_CLASSES)


@pytest.fixture(scope="module")
def trained_shapes():
    from models.lora_family import train_caption_classifier
    from tests.unit.task_support import SHAPES

    return train_caption_classifier(SHAPE_CAPTIONS, SHAPE_LABELS, lora_settings(),
                                    classifier_training(steps=12, batch_size=6, lr=3e-3), SHAPES.n_classes)


def test_a_three_class_task_gets_a_three_class_classifier_that_learns(trained_shapes):
    from models.lora_family import classify_captions, evaluate_caption_classifier

    assert trained_shapes.model.head.out_features == 3
    assert trained_shapes.losses[-1] < trained_shapes.losses[0]
    predicted, probs = classify_captions(trained_shapes.model, SHAPE_CAPTIONS + ["a photo of a seven", "ein Kreis"])
    assert probs.shape == (len(SHAPE_CAPTIONS) + 2, 3) and np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert set(predicted.tolist()) <= {0, 1, 2}  # no index outside the task, whatever the caption
    assert evaluate_caption_classifier(trained_shapes.model, SHAPE_CAPTIONS, SHAPE_LABELS)["caption_acc"] > 0.5  # chance 1/3


def test_no_caption_gives_no_row_and_one_column_per_class(trained_shapes):
    from models.lora_family import classify_captions

    predicted, probs = classify_captions(trained_shapes.model, [])
    assert predicted.shape == (0,) and probs.shape == (0, 3)


def test_a_label_outside_the_tasks_classes_is_refused_naming_the_range():
    from models.lora_family import train_caption_classifier

    with pytest.raises(ValueError, match=r"class indices 0\.\.2 \(the task's 3 classes\); found \[3\] outside that range"):
        train_caption_classifier(["a circle", "a cube"], np.array([0, 3]), lora_settings(), classifier_training(steps=1), 3)


def test_a_saved_classifier_loads_back_as_the_lora_family_with_the_same_predictions(trained, tmp_path):
    from models.artifacts import load_caption_classifier, load_model, save_caption_classifier, saved_family
    from models.lora_family import classify_captions

    directory = save_caption_classifier(trained.model, tmp_path / "classifier")
    assert saved_family(directory) == "lora"
    loaded = load_caption_classifier(directory)
    before, after = classify_captions(trained.model, CAPTIONS), classify_captions(loaded, CAPTIONS)
    assert (before[0] == after[0]).all() and np.allclose(before[1], after[1], atol=1e-5)
    with pytest.raises(ValueError, match="holds a 'lora' model"):
        load_model(directory)


def test_the_gate_refuses_to_compare_two_families(trained):
    from flows.model_stages import _one_family
    from models.family import family_of
    from models.imagebind import ImageBind, ImageBindConfig

    imagebind = ImageBind(ImageBindConfig(image_size=16, audio_n_mels=40, audio_frames=100))
    with pytest.raises(ValueError, match=r"challenger v2 \(family lora\) and @champion v1 \(family imagebind\) differ"):
        _one_family("shared-name", {"challenger": "2", "champion": "1"},
                    {"challenger": family_of(trained.model), "champion": family_of(imagebind)})
    alone = _one_family("flywheel-lora", {"challenger": "2", "champion": None}, {"challenger": family_of(trained.model)})
    assert alone.name == "lora"
