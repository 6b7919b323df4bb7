"""Human review queue through Label Studio: export unsure labels as tasks, import the answers.

Export: rows the label model labels with confidence under the review threshold (and rows no LF
could label) become Label Studio tasks in its JSON import format, each with the label model's
guess as a pre-annotation (`predictions`), next to the labelling config the tasks are meant for.

Import: Label Studio's JSON export (a list of tasks with `annotations[].result[].value.choices`)
becomes human labels whose event time is the annotation time, so point-in-time retrieval only
sees a reviewed label once it exists. Skipped (cancelled) and empty annotations are ignored;
with several annotations on one sample the latest wins. Label Studio's SDK is not needed for
files: the formats are plain JSON (https://labelstud.io/guide/task_format).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.sax.saxutils import quoteattr

import pandas as pd

from features.atomic import atomic_write_bytes
from features.io import save_json
from features.task import Task, UnknownClass

MODEL_VERSION = "flywheel-label-model"
CONTROL = "label"  # the <Choices> tag's name: `from_name` in every result
TARGET = "image"  # the object tag the choice is attached to: `to_name`
TASKS_NAME = "tasks.json"
CONFIG_NAME = "labeling_config.xml"
ANNOTATION_COLUMNS = ("sample_id", "label", "annotator", "annotated_at")


@dataclass(frozen=True)
class ReviewQueue:
    tasks_path: Path  # Label Studio tasks to import (JSON list)
    config_path: Path  # the labelling config the tasks fit
    tasks: int


def build_labeling_config(task: Task) -> str:
    """The Label Studio config: the sample's image, audio and caption, and one choice per class name."""
    choices = "\n".join(f"    <Choice value={quoteattr(c)}/>" for c in task.classes)
    return (
        "<View>\n"
        f'  <Image name="{TARGET}" value="$image"/>\n'
        '  <Audio name="audio" value="$audio"/>\n'
        '  <Text name="caption" value="$caption"/>\n'
        f'  <Choices name="{CONTROL}" toName="{TARGET}" choice="single" showInline="true">\n'
        f"{choices}\n"
        "  </Choices>\n"
        "</View>\n"
    )


def select_for_review(labels: pd.DataFrame, threshold: float) -> pd.DataFrame:
    """Rows not labelled by a person whose label is missing or less confident than `threshold`."""
    unsure = labels["label"].isna() | (labels["label_confidence"] < threshold)
    return labels[(labels["label_source"] != "human") & unsure]


def _media(root: str, relative: Any) -> str:
    return f"{root.rstrip('/')}/{relative}" if isinstance(relative, str) and relative else ""


def build_review_tasks(
    labels: pd.DataFrame, rows: pd.DataFrame, media_root: str, threshold: float, task: Task
) -> list[dict]:
    """Label Studio tasks for the rows to review, least confident first; the pre-annotation names the
    label model's guess by its class name.

    `media_root` prefixes the clean rows' relative file paths: the clean batch folder, or the URL
    Label Studio serves it under (e.g. "/data/local-files/?d=lake/clean/<batch>").
    """
    queue = select_for_review(labels, threshold).sort_values("label_confidence", kind="stable")
    files = rows.set_index("sample_id")[["image", "audio", "caption"]]
    tasks = []
    for task_id, row in enumerate(queue.itertuples(index=False), start=1):
        source = files.loc[row.sample_id]
        item: dict[str, Any] = {
            "id": task_id,
            "data": {
                "image": _media(media_root, source["image"]),
                "audio": _media(media_root, source["audio"]),
                "caption": source["caption"] if isinstance(source["caption"], str) else "",
                "sample_id": row.sample_id,
            },
            "predictions": [],
        }
        if pd.notna(row.label):
            item["predictions"].append({
                "model_version": MODEL_VERSION,
                "score": float(row.label_confidence),
                "result": [{"from_name": CONTROL, "to_name": TARGET, "type": "choices",
                            "value": {"choices": [task.name_of(int(row.label))]}}],
            })
        tasks.append(item)
    return tasks


def save_review_queue(
    out_dir: Path, labels: pd.DataFrame, rows: pd.DataFrame, media_root: str, threshold: float, task: Task
) -> ReviewQueue:
    """Write `tasks.json` and `labeling_config.xml` into `out_dir` (replacing earlier ones)."""
    tasks = build_review_tasks(labels, rows, media_root, threshold, task)
    tasks_path, config_path = out_dir / TASKS_NAME, out_dir / CONFIG_NAME
    save_json(tasks_path, tasks)
    atomic_write_bytes(config_path, build_labeling_config(task).encode())
    return ReviewQueue(tasks_path, config_path, len(tasks))


# ---- import ---------------------------------------------------------------------------------


def _annotator(completed_by: Any) -> str | None:
    """Label Studio writes a user id, or a user object in the full JSON export."""
    if isinstance(completed_by, dict):
        return completed_by.get("email") or (str(completed_by["id"]) if "id" in completed_by else None)
    return None if completed_by is None else str(completed_by)


def _chosen_class(annotation: dict, where: str, task: Task) -> int | None:
    """The index of the class an annotation chose, None when it chose nothing; a choice that is not
    exactly one of the task's class names is an error."""
    chosen = [
        choice
        for result in annotation.get("result") or []
        if result.get("type") == "choices" and result.get("from_name") == CONTROL
        for choice in (result.get("value") or {}).get("choices", [])
    ]
    if not chosen:
        return None
    if len(chosen) != 1:
        raise ValueError(f"{where} chose {chosen!r}; accepted: exactly one of {task.describe_classes()}")
    if not isinstance(chosen[0], str):  # Label Studio writes choices as the config's strings
        raise ValueError(f"{where} chose {chosen[0]!r}, not a class name; accepted: {task.describe_classes()}")
    try:
        return task.index_of(chosen[0])
    except UnknownClass as err:
        raise ValueError(f"{where} {err}") from None


def _annotation_time(annotation: dict, where: str) -> pd.Timestamp:
    stamp = annotation.get("updated_at") or annotation.get("created_at")
    if not stamp:
        raise ValueError(f"{where} has neither updated_at nor created_at; its time is needed for point-in-time labels")
    moment = pd.Timestamp(stamp)
    return moment.tz_localize("UTC") if moment.tzinfo is None else moment.tz_convert("UTC")


def import_annotations(export_json_path: Path, task: Task) -> pd.DataFrame:
    """Completed annotations of a Label Studio JSON export: sample_id, label (the chosen class's index),
    annotator, annotated_at.

    One row per sample: the latest annotation that chose a class. Cancelled (skipped) annotations
    and ones submitted without a choice are ignored; a choice that is not one of the task's class
    names raises, naming the task, the sample and the accepted classes.
    """
    tasks = json.loads(Path(export_json_path).read_text(encoding="utf-8"))
    if not isinstance(tasks, list):
        raise ValueError(f"{export_json_path} holds a {type(tasks).__name__}; a Label Studio JSON export is a list of tasks")
    found: list[dict[str, Any]] = []
    for item in tasks:
        sample_id = (item.get("data") or {}).get("sample_id")
        if sample_id is None:
            raise ValueError(f"task {item.get('id')!r} has no data.sample_id: it was not exported from a flywheel review queue")
        for annotation in item.get("annotations") or []:
            where = f"task {item.get('id')!r} (sample {sample_id!r}), annotation {annotation.get('id')!r},"
            if annotation.get("was_cancelled"):
                continue
            label = _chosen_class(annotation, where, task)
            if label is not None:
                found.append({"sample_id": sample_id, "label": label, "annotator": _annotator(annotation.get("completed_by")),
                              "annotated_at": _annotation_time(annotation, where)})
    frame = pd.DataFrame(found, columns=list(ANNOTATION_COLUMNS))
    frame = frame.sort_values("annotated_at", kind="stable").drop_duplicates("sample_id", keep="last")
    frame["label"] = frame["label"].astype("Int64")
    frame["annotated_at"] = pd.to_datetime(frame["annotated_at"], utc=True)
    return frame.reset_index(drop=True)


def build_reviewed_labels(annotations: pd.DataFrame) -> pd.DataFrame:
    """Annotations as rows of the labels table: human labels that exist from their annotation time on."""
    return pd.DataFrame({
        "sample_id": annotations["sample_id"].array,
        "event_timestamp": annotations["annotated_at"].array,
        "label": annotations["label"].astype("Int64").array,
        "label_source": "human",
        "label_confidence": 1.0,
        "label_votes": [json.dumps({"human": int(label)}) for label in annotations["label"]],
    })
