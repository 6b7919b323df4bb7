"""Loading what serves (I/O): a registered version from MLflow and the lake's model inputs to search."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from features.task import Task
from models.inputs import ModelInputs, has_model_inputs, iter_model_inputs
from models.registry import Registry
from models.serving.holder import ServingKey
from models.serving.scoring import ServedModel

log = logging.getLogger(__name__)


def lake_batches(inputs_root: Path) -> list[str]:
    """Batches with model inputs under `lake/inputs`, in name order (staging folders skipped)."""
    if not inputs_root.is_dir():
        return []
    return sorted(p.name for p in inputs_root.iterdir() if not p.name.startswith(".") and has_model_inputs(p))


def lake_fingerprint(inputs_root: Path) -> tuple[tuple[str, int], ...]:
    """Batch names and folder mtimes: a new or rebuilt batch changes it (shard folders are replaced whole)."""
    return tuple((b, (inputs_root / b).stat().st_mtime_ns) for b in lake_batches(inputs_root))


def iter_lake_inputs(inputs_root: Path) -> Iterator[tuple[str, ModelInputs]]:
    for batch in lake_batches(inputs_root):
        for shard in iter_model_inputs(inputs_root / batch):
            yield batch, shard


def resolve_alias(registry: Registry, alias: str, inputs_root: Path) -> ServingKey | None:
    version = registry.alias_version(alias)
    return ServingKey(version, lake_fingerprint(inputs_root)) if version is not None else None


def served_task(saved: dict | None, fallback: Task, where: str, classes_in_model: int | None = None) -> Task:
    """The task a version answers in: its own `task.json` when it has one; else (a version logged before
    models carried their task) the project's task, if its class count fits the model's outputs (a
    classifier's head; None: a zero-shot model, which scores any prompts)."""
    if saved is not None:
        return Task.from_dict(saved)
    if classes_in_model is not None and classes_in_model != fallback.n_classes:
        raise ValueError(f"{where} carries no task.json and scores {classes_in_model} classes, but params.yaml's "
                         f"task has {fallback.n_classes}; serve a version trained for this task")
    log.warning("%s carries no task.json; answering with params.yaml's classes %s", where, fallback.describe_classes())
    return fallback


def load_served_model(registry: Registry, key: ServingKey, inputs_root: Path | None, task: Task,
                      known: Iterable[Any] = ()) -> ServedModel:
    """The version's model, input spec and task, and what its family serves (`serving_spec`: for ImageBind its
    prompt embeddings and a search index over the lake's model inputs; an empty index when `inputs_root` is
    None, e.g. for batch scoring). `task`: the project's, for a version that predates models carrying their own;
    `known`: families to look in before the registered ones (the configured train.family)."""
    from models.pyfunc import load_registered

    where = f"{registry.model_name} v{key.version}"
    loaded = load_registered(registry, key.version, known)
    model = loaded.model.eval()
    answers = served_task(loaded.task, task, where)
    serving = loaded.family.serving_spec(model, answers, lambda: iter_lake_inputs(inputs_root) if inputs_root else ())
    if loaded.task is None and serving.n_classes not in (None, answers.n_classes):
        served_task(None, task, where, serving.n_classes)  # raises: the head does not fit the project's classes
    return ServedModel(name=registry.model_name, version=key.version, model=model, spec=loaded.spec, task=answers,
                       serving=serving, loaded_at=time.time(), family=loaded.family.name)
