"""Review queue: unsure labels go to Label Studio as tasks; its export comes back as timed human labels."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.clean import clean_batch
from features.ingest import ingest_batch
from features.label import ModelVotes, build_labels
from features.review import (
    build_labeling_config,
    build_reviewed_labels,
    import_annotations,
    save_review_queue,
)
from tests.unit.task_support import DIGITS, SHAPES
from tests.unit.params_support import clean_params, label_params


@pytest.fixture(scope="module")
def demo_labels(demo_batch_factory, tmp_path_factory):
    """A 150-sample demo batch labelled with a noisy champion (85% right), and its clean folder."""
    source = demo_batch_factory(samples=150, seed=11, label_rate=0.3)
    work = tmp_path_factory.mktemp("review")
    clean = clean_batch(ingest_batch(source, work / "raw").batch_dir, work / "clean", clean_params(DIGITS))
    digits = {json.loads(l)["sample_id"]: json.loads(l)["digit"] for l in (source / "_truth.jsonl").read_text().splitlines()}
    truth = np.array([digits[s] for s in clean.rows["sample_id"]])
    rng = np.random.default_rng(0)
    predicted = {m: np.where(rng.random(len(truth)) < 0.85, truth, (truth + 1) % 10) for m in ("image", "audio")}
    confidence = {m: rng.uniform(0.4, 1.0, len(truth)) for m in ("image", "audio")}
    labels, _ = build_labels(clean.rows, DIGITS, ModelVotes(list(clean.rows["sample_id"]), predicted, confidence),
                             label_params())
    return clean.rows, labels, clean.batch_dir


def _annotation(choice: str | None, at: str, annotator: object = 7, cancelled: bool = False) -> dict:
    result = [] if choice is None else [
        {"id": "r1", "from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": [choice]}}
    ]
    return {"id": at, "result": result, "was_cancelled": cancelled, "ground_truth": False,
            "created_at": at, "updated_at": at, "completed_by": annotator}


def _export(tasks: list[dict], annotations: dict[str, list[dict]], path: Path) -> Path:
    """What Label Studio's JSON export looks like after people worked on the imported tasks."""
    exported = [{**task, "id": 1000 + i, "annotations": annotations.get(task["data"]["sample_id"], [])}
                for i, task in enumerate(tasks)]
    path.write_text(json.dumps(exported))
    return path


def test_labeling_config_names_the_task_fields_and_offers_the_tasks_classes():
    root = ET.fromstring(build_labeling_config(DIGITS))
    assert {(t.tag, t.get("name"), t.get("value")) for t in root if t.tag != "Choices"} == {
        ("Image", "image", "$image"), ("Audio", "audio", "$audio"), ("Text", "caption", "$caption")}
    choices = root.find("Choices")
    assert (choices.get("name"), choices.get("toName")) == ("label", "image")
    assert [c.get("value") for c in choices] == [str(k) for k in range(10)]
    shapes = ET.fromstring(build_labeling_config(SHAPES)).find("Choices")
    assert [c.get("value") for c in shapes] == ["circle", "square", "triangle"]


def test_low_confidence_rows_go_to_the_review_file_with_the_guess_as_prediction(demo_labels, tmp_path):
    rows, labels, clean_dir = demo_labels
    threshold = label_params().review_threshold
    queue = save_review_queue(tmp_path / "review", labels, rows, str(clean_dir), threshold, DIGITS)
    tasks = json.loads(queue.tasks_path.read_text())
    unsure = labels[(labels["label_source"] != "human") & (labels["label"].isna() | (labels["label_confidence"] < threshold))]
    assert len(unsure) > 0 and queue.tasks == len(tasks)
    assert sorted(t["data"]["sample_id"] for t in tasks) == sorted(unsure["sample_id"])
    assert [t["id"] for t in tasks] == list(range(1, len(tasks) + 1))
    for task in tasks:
        assert Path(task["data"]["image"]).is_file() and Path(task["data"]["audio"]).is_file()
        guess = labels.set_index("sample_id").loc[task["data"]["sample_id"]]
        if pd.notna(guess["label"]):
            (prediction,) = task["predictions"]
            assert prediction["model_version"] == "flywheel-label-model"
            assert prediction["score"] == pytest.approx(guess["label_confidence"])
            assert prediction["result"] == [{"from_name": "label", "to_name": "image", "type": "choices",
                                             "value": {"choices": [str(int(guess["label"]))]}}]
    assert ET.fromstring(queue.config_path.read_text()).tag == "View"


def test_label_studio_export_round_trip_gives_timed_human_labels(demo_labels, tmp_path):
    rows, labels, clean_dir = demo_labels
    everything = save_review_queue(tmp_path / "review", labels, rows, str(clean_dir), 1.01, DIGITS)  # every non-human row
    tasks = json.loads(everything.tasks_path.read_text())
    a, b, c, d = (t["data"]["sample_id"] for t in tasks[:4])
    export = _export(tasks, {
        a: [_annotation("4", "2026-03-01T10:00:00Z", annotator={"id": 3, "email": "ann@example.org"})],
        b: [_annotation("1", "2026-03-01T10:00:00Z"), _annotation("8", "2026-03-02T09:30:00.5Z", annotator=9)],
        c: [_annotation(None, "2026-03-01T10:00:00Z", cancelled=True)],  # skipped
        d: [_annotation("6", "2026-03-03T08:00:00Z"), _annotation(None, "2026-03-04T08:00:00Z", cancelled=True)],
    }, tmp_path / "export.json")
    annotations = import_annotations(export, DIGITS)
    assert list(annotations.columns) == ["sample_id", "label", "annotator", "annotated_at"]
    got = annotations.set_index("sample_id")
    assert sorted(got.index) == sorted([a, b, d])  # the skipped task and the untouched ones bring nothing
    assert (got.loc[a, "label"], got.loc[a, "annotator"]) == (4, "ann@example.org")
    assert (got.loc[b, "label"], got.loc[b, "annotator"]) == (8, "9")  # the later annotation wins
    assert got.loc[b, "annotated_at"] == pd.Timestamp("2026-03-02T09:30:00.5Z")
    assert got.loc[d, "label"] == 6  # a later skip does not undo an answer
    reviewed = build_reviewed_labels(annotations)
    assert set(reviewed.columns) >= {"sample_id", "event_timestamp", "label", "label_source", "label_confidence", "label_votes"}
    assert (reviewed["label_source"] == "human").all() and (reviewed["label_confidence"] == 1.0).all()
    assert str(reviewed["event_timestamp"].dtype) == "datetime64[ns, UTC]"
    captured = rows.set_index("sample_id")["captured_at"]
    assert (reviewed["event_timestamp"].to_numpy() > captured.loc[reviewed["sample_id"]].to_numpy()).all()


@pytest.mark.parametrize("choices", [["11"], ["seven"], ["3", "5"], [3]])
def test_a_choice_that_is_not_one_class_is_an_error_naming_the_task(tmp_path, choices):
    task = {"id": 42, "data": {"sample_id": "s-1", "image": "", "audio": "", "caption": ""},
            "annotations": [{**_annotation("0", "2026-03-01T10:00:00Z"), "id": 5}]}
    task["annotations"][0]["result"][0]["value"]["choices"] = choices
    path = tmp_path / "export.json"
    path.write_text(json.dumps([task]))
    with pytest.raises(ValueError, match=r"task 42 \(sample 's-1'\), annotation 5.*accepted: (exactly one of )?\['0', '1'"):
        import_annotations(path, DIGITS)


def test_a_shapes_queue_speaks_class_names_both_ways(tmp_path):
    """The pre-annotation names the guessed class; a reviewer's chosen name comes back as its index."""
    rows = pd.DataFrame({"sample_id": ["a", "b"], "image": ["images/a.png", None], "audio": [None, None],
                         "caption": ["a shape", None]})
    labels = pd.DataFrame({"sample_id": ["a", "b"], "label": pd.array([2, None], dtype="Int64"),
                           "label_source": ["label_model", None], "label_confidence": [0.4, 1 / 3]})
    queue = save_review_queue(tmp_path / "review", labels, rows, "/media", 0.7, SHAPES)
    tasks = json.loads(queue.tasks_path.read_text())
    guess = {t["data"]["sample_id"]: t["predictions"] for t in tasks}
    assert guess["a"][0]["result"][0]["value"]["choices"] == ["triangle"] and guess["b"] == []
    assert [c.get("value") for c in ET.fromstring(queue.config_path.read_text()).find("Choices")] == list(SHAPES.classes)

    export = _export(tasks, {"a": [_annotation("square", "2026-03-01T10:00:00Z")],
                             "b": [_annotation("circle", "2026-03-01T11:00:00Z")]}, tmp_path / "export.json")
    assert import_annotations(export, SHAPES).set_index("sample_id")["label"].to_dict() == {"a": 1, "b": 0}
    wrong = _export(tasks, {"a": [_annotation("hexagon", "2026-03-01T10:00:00Z")]}, tmp_path / "wrong.json")
    with pytest.raises(ValueError, match=r"'hexagon' is not a class of this task; accepted: \['circle', 'square', "
                                         r"'triangle'\]"):
        import_annotations(wrong, SHAPES)


def test_an_export_with_no_answers_gives_an_empty_typed_frame(tmp_path):
    path = tmp_path / "export.json"
    path.write_text(json.dumps([{"id": 1, "data": {"sample_id": "s-1"}, "annotations": []}]))
    annotations = import_annotations(path, DIGITS)
    assert annotations.empty and str(annotations["annotated_at"].dtype) == "datetime64[ns, UTC]"
    assert build_reviewed_labels(annotations).empty
