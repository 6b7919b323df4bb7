"""The task is declared in params.yaml: a task that cannot work stops at start-up, naming the key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from features.task import Task, UnknownClass, build_prompts, slice_values
from flows.settings import load_settings


def write_golden(folder: Path, rows: list[dict]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    lines = [{"sample_id": f"g{i}", "captured_at": "2026-11-01T00:00:00+00:00", "caption": "a thing", **row}
             for i, row in enumerate(rows)]
    (folder / "manifest.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return folder


def load_with(tmp_path: Path, **task) -> object:
    golden = write_golden(tmp_path / "golden", [{"label": "cat", "camera": "a"}, {"label": "dog", "camera": "b"}])
    section = {"classes": ["cat", "dog"], "prompts": "a photo of a {label}", "golden": "golden", **task}
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"task": section}))
    assert golden.is_dir()
    return load_settings(tmp_path / "home", path)


def test_a_declared_task_loads_with_the_golden_path_relative_to_the_params_file(tmp_path):
    settings = load_with(tmp_path, slices=["camera"], image_channels=3)
    task = settings.task
    assert task.classes == ("cat", "dog") and task.n_classes == 2
    assert task.prompts == (("a photo of a cat",), ("a photo of a dog",))
    assert task.golden == (tmp_path / "golden").resolve() and task.image_channels == 3


@pytest.mark.parametrize(("task", "named"), [
    ({"classes": ["cat"]}, "task.classes"),
    ({"prompts": "a photo of a thing"}, "{label}"),
    ({"prompts": {"cat": "a cat"}}, "task.prompts"),
    ({"golden": "nowhere"}, "task.golden"),
    ({"slices": ["microphone"]}, "task.slices"),
    ({"image_channels": 2}, "task.image_channels"),
    ({"classes": ["cat", "cat"]}, "task.classes"),
])
def test_a_task_that_cannot_work_stops_at_start_up_naming_the_key(tmp_path, task, named):
    with pytest.raises(ValueError, match=named.replace("{", r"\{").replace("}", r"\}")):
        load_with(tmp_path, **task)


def test_a_golden_row_without_a_label_or_outside_the_classes_stops_start_up(tmp_path):
    for rows, message in (([{"label": "cat"}, {}], "has no label"), ([{"label": "cat"}, {"label": "cow"}], "'cow'")):
        folder = tmp_path / message.replace(" ", "_").replace("'", "")
        write_golden(folder / "golden", rows)
        (folder / "params.yaml").write_text(yaml.safe_dump(
            {"task": {"classes": ["cat", "dog"], "prompts": "a {label}", "golden": "golden"}}))
        with pytest.raises(ValueError, match=message):
            load_settings(folder / "home", folder / "params.yaml")


def test_params_without_a_task_say_how_to_get_one(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"train": {"seed": 1}}))
    with pytest.raises(ValueError, match="no task: section.*flywheel init"):
        load_settings(tmp_path / "home", path)


def test_a_gate_slice_that_is_not_the_tasks_stops_start_up(tmp_path):
    with pytest.raises(ValueError, match=r"gate\.families\.imagebind\.slices.*'voice'"):
        golden = write_golden(tmp_path / "golden", [{"label": "cat"}, {"label": "dog"}])
        path = tmp_path / "params.yaml"
        path.write_text(yaml.safe_dump({"task": {"classes": ["cat", "dog"], "prompts": "a {label}", "golden": str(golden)},
                                        "gate": {"families": {"imagebind": {
                                            "slices": {"voice": {"zero_shot_image_acc": {"min": 0.1}}}}}}}))
        load_settings(tmp_path / "home", path)


def test_labels_are_class_names_and_an_integer_names_its_class():
    task = Task(classes=tuple(str(k) for k in range(3)), prompts=build_prompts(("0", "1", "2"), "class {label}"))
    assert task.index_of(2) == 2 and task.index_of("1") == 1 and task.index_of(2.0) == 2
    with pytest.raises(UnknownClass, match=r"'7'.*accepted: \['0', '1', '2'\]"):
        task.index_of(7)
    with pytest.raises(UnknownClass):
        task.index_of(True)


def test_mapped_prompts_keep_several_texts_per_class():
    prompts = build_prompts(("cat", "dog"), {"cat": ["a cat", "a kitten"], "dog": "a dog"})
    assert prompts == (("a cat", "a kitten"), ("a dog",))


def test_slice_values_come_from_a_column_or_the_rows_meta():
    import pandas as pd

    rows = pd.DataFrame({"language": ["en", None], "meta": [json.dumps({"camera": "a"}), json.dumps({})]})
    assert slice_values(rows, "language") == ["en", ""]
    assert slice_values(rows, "camera") == ["a", ""]
