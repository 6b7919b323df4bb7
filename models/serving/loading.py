"""Loading what serves (I/O): a registered version from MLflow and the lake's model inputs to search."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from features.task import Task
from models.families import LORA_FAMILY, family_of
from models.imagebind import TEXT
from models.inputs import ModelInputs, has_model_inputs, iter_model_inputs
from models.registry import Registry
from models.serving.holder import ServingKey
from models.serving.scoring import SearchIndex, ServedModel, build_prompt_embeddings, build_search_index

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


def load_served_model(registry: Registry, key: ServingKey, inputs_root: Path | None, task: Task) -> ServedModel:
    """The version's pyfunc (model, input spec and task), its prompt embeddings and its search index over the
    lake's model inputs (an empty index when `inputs_root` is None, e.g. for batch scoring). `task`: the
    project's, for a version that predates models carrying their own."""
    import mlflow.pyfunc

    from models.text import encode_class_prompts, encode_texts

    registry.client()
    where = f"{registry.model_name} v{key.version}"
    python_model = mlflow.pyfunc.load_model(f"models:/{registry.model_name}/{key.version}").unwrap_python_model()
    model = python_model.model.eval()
    saved = getattr(python_model, "task", None)
    if family_of(model) == LORA_FAMILY:  # a caption classifier: no prompts, no embedding space to search
        answers = served_task(saved, task, where, int(model.head.out_features))
        return ServedModel(name=registry.model_name, version=key.version, model=model, spec=dict(python_model.spec),
                           task=answers, prompt_emb=np.zeros((answers.n_classes, 0), np.float32), text_scale=1.0,
                           index=SearchIndex(), loaded_at=time.time(), family=LORA_FAMILY)
    answers = served_task(saved, task, where)
    index = build_search_index(model, iter_lake_inputs(inputs_root) if inputs_root else (), encode_texts)
    return ServedModel(name=registry.model_name, version=key.version, model=model, spec=dict(python_model.spec),
                       task=answers, prompt_emb=build_prompt_embeddings(model, encode_class_prompts(answers.prompts)),
                       text_scale=model.logit_scale(TEXT), index=index, loaded_at=time.time())
