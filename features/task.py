"""The user's task, as data: class names, the text that stands for each class, the golden batch,
the slice fields, the caption languages and the image channels.

Built once at the entry point from `params.yaml`'s `task:` section (flows/settings.py) and passed
down; nothing in the core names a class, a prompt, a slice value or a language. Inside the lifecycle a
class is its index in `classes` (the label column, the model's scores, the label model's votes);
names appear at the edges: manifests, serving, plots, the review queue, the registry.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

IMAGE_CHANNELS = (1, 3)  # grayscale or RGB model inputs
LABEL_PLACEHOLDER = "{label}"  # where a prompt template puts the class name


class UnknownClass(ValueError):
    """A label that names none of the task's classes."""


@dataclass(frozen=True)
class Task:
    classes: tuple[str, ...]  # class names, in the order of the model's scores
    prompts: tuple[tuple[str, ...], ...]  # per class, the texts whose embeddings stand for it in zero-shot scoring
    golden: Path | None = None  # a landing batch with every row labelled: the gate's fixed test set
    slices: tuple[str, ...] = ()  # manifest metadata fields judged per value (the class slice always exists)
    languages: tuple[str, ...] | None = None  # accepted caption languages; None: no language check
    image_channels: int = 1  # 1: grayscale; 3: RGB, colour kept from the file to the model

    def __post_init__(self) -> None:
        if len(self.classes) < 2:
            raise ValueError(f"task.classes: a task needs at least two classes, got {list(self.classes)}")
        if len(set(self.classes)) != len(self.classes):
            repeated = sorted({c for c in self.classes if self.classes.count(c) > 1})
            raise ValueError(f"task.classes: each class is named once; repeated: {repeated}")
        if any(not isinstance(c, str) or not c.strip() for c in self.classes):
            raise ValueError(f"task.classes: class names are non-empty strings, got {list(self.classes)}")
        if len(self.prompts) != len(self.classes) or any(not texts for texts in self.prompts):
            raise ValueError("task.prompts: every class needs at least one prompt text")
        if self.image_channels not in IMAGE_CHANNELS:
            raise ValueError(f"task.image_channels must be one of {IMAGE_CHANNELS}, got {self.image_channels!r}")
        if "class" in self.slices:
            raise ValueError("task.slices: the class slice always exists; list metadata fields only")

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    def index_of(self, label: Any) -> int:
        """A manifest's label → class index. Labels are class names; an integer `7` means class `"7"`."""
        if isinstance(label, float) and math.isfinite(label) and label.is_integer():
            label = int(label)
        if isinstance(label, bool) or not isinstance(label, (str, int)):
            raise UnknownClass(f"label must be a class name, got {type(label).__name__} {label!r:.80}; "
                               f"the task's classes are {self.describe_classes()}")
        name = str(label)
        try:
            return self.classes.index(name)
        except ValueError:
            raise UnknownClass(f"label {name!r:.80} is not a class of this task; "
                               f"accepted: {self.describe_classes()}") from None

    def name_of(self, index: int) -> str:
        return self.classes[int(index)]

    def prompt_of(self, index: int) -> str:
        """The first prompt text of a class: what an answer quotes as the prompt it matched."""
        return self.prompts[int(index)][0]

    def describe_classes(self, limit: int = 20) -> str:
        shown = ", ".join(repr(c) for c in self.classes[:limit])
        return f"[{shown}{', …' if len(self.classes) > limit else ''}] ({len(self.classes)} classes)"

    def fingerprint(self) -> str:
        """What a cached stage result depends on: the classes, prompts, slices, languages and channels
        (the golden batch is versioned by its content, not by its path)."""
        return json.dumps({"classes": self.classes, "prompts": self.prompts, "slices": self.slices,
                           "languages": self.languages, "image_channels": self.image_channels}, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Task":
        """The task `to_dict` wrote (a model's `task.json`): the classes and prompts a version was trained
        for, so it answers in its own classes whatever params.yaml says today."""
        classes = tuple(str(c) for c in data["classes"])
        languages = data.get("languages")
        return cls(classes=classes, prompts=build_prompts(classes, data["prompts"]),
                   golden=None if data.get("golden") is None else Path(data["golden"]),
                   slices=tuple(data.get("slices", ())), languages=None if languages is None else tuple(languages),
                   image_channels=int(data.get("image_channels", 1)))

    def to_dict(self) -> dict[str, Any]:
        return {"classes": list(self.classes), "prompts": {c: list(p) for c, p in zip(self.classes, self.prompts)},
                "golden": None if self.golden is None else str(self.golden), "slices": list(self.slices),
                "languages": None if self.languages is None else list(self.languages),
                "image_channels": self.image_channels}


def build_prompts(classes: tuple[str, ...], prompts: str | dict[str, Any]) -> tuple[tuple[str, ...], ...]:
    """`prompts` as written in params.yaml → one tuple of texts per class.

    A template puts each class name where `{label}` is ("a photo of a {label}"); a mapping gives each
    class its own texts (a string or a list), whose embeddings are averaged.
    """
    if isinstance(prompts, str):
        if LABEL_PLACEHOLDER not in prompts:
            raise ValueError(f"task.prompts: the template {prompts!r} has no {LABEL_PLACEHOLDER}; write where the "
                             "class name goes, e.g. 'a photo of a {label}', or map each class to its texts")
        return tuple((prompts.replace(LABEL_PLACEHOLDER, name),) for name in classes)
    if not isinstance(prompts, dict):
        raise ValueError(f"task.prompts must be a template with {LABEL_PLACEHOLDER} or a mapping from class to "
                         f"texts, got {type(prompts).__name__}")
    mapping = {str(k): v for k, v in prompts.items()}
    missing = [c for c in classes if c not in mapping]
    extra = sorted(set(mapping) - set(classes))
    if missing or extra:
        raise ValueError(f"task.prompts: the mapping must name exactly the task's classes; "
                         f"missing {missing}, not classes {extra}")
    out = []
    for name in classes:
        texts = mapping[name]
        texts = [texts] if isinstance(texts, str) else list(texts)
        if not texts or any(not isinstance(t, str) or not t.strip() for t in texts):
            raise ValueError(f"task.prompts.{name}: give one or more non-empty texts, got {mapping[name]!r}")
        out.append(tuple(texts))
    return tuple(out)


def check_golden_batch(task: Task) -> None:
    """Stop at start-up when the golden batch cannot work: a missing folder or manifest, a line that is
    not a well-formed row, a row without a label or with one outside the classes, a slice field no row has."""
    from features.manifest import MANIFEST_NAME, parse_manifest

    if task.golden is None:
        raise ValueError("task.golden: name the landing batch (a folder with manifest.jsonl) whose rows, every one "
                         "labelled, are the gate's golden set")
    manifest = task.golden / MANIFEST_NAME
    if not manifest.is_file():
        raise ValueError(f"task.golden: {task.golden} has no {MANIFEST_NAME}; it must be a landing batch "
                         "(a project with a demo generator writes one with flywheel demo-data --golden)")
    rows, refused = parse_manifest(manifest.read_bytes(), task.golden, stage="golden")
    if refused:
        first = refused[0]
        raise ValueError(f"task.golden: {len(refused)} line(s) of {manifest} are not well-formed rows, first: "
                         f"{first.reason}: {first.detail}")
    if not rows:
        raise ValueError(f"task.golden: {manifest} holds no rows")
    for row in rows:
        if row.get("label") is None:
            raise ValueError(f"task.golden: row {row['sample_id']!r} has no label; every golden row is labelled")
        try:
            task.index_of(row["label"])
        except UnknownClass as err:
            raise ValueError(f"task.golden: row {row['sample_id']!r}: {err}") from None
    for field in task.slices:
        if not any(row.get(field) not in (None, "") for row in rows):
            raise ValueError(f"task.slices: no row of the golden batch {task.golden} has a {field!r} field, "
                             "so that slice could never be judged")


def slice_values(rows: Any, field: str) -> list[str]:
    """Per clean row, the value of manifest field `field` ("" where absent): its own column (language,
    source) or the row's `meta` JSON, where the other manifest fields are kept."""
    if field in rows.columns and field != "meta":
        return ["" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v) for v in rows[field]]
    out = []
    for meta in rows["meta"] if "meta" in rows.columns else [None] * len(rows):
        value = json.loads(meta).get(field) if isinstance(meta, str) and meta else None
        out.append("" if value is None else str(value))
    return out
