"""Loading what serves (I/O): a registered version from MLflow and the lake's model inputs to search."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from models.evaluate import DIGIT_PROMPTS
from models.families import LORA_FAMILY, family_of
from models.imagebind import TEXT
from models.inputs import ModelInputs, has_model_inputs, iter_model_inputs
from models.registry import Registry
from models.serving.holder import ServingKey
from models.serving.scoring import SearchIndex, ServedModel, build_prompt_embeddings, build_search_index


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


def load_served_model(registry: Registry, key: ServingKey, inputs_root: Path | None) -> ServedModel:
    """The version's pyfunc (model and input spec), its prompt embeddings and its search index over the
    lake's model inputs (an empty index when `inputs_root` is None, e.g. for batch scoring)."""
    import mlflow.pyfunc

    from models.text import encode_texts

    registry.client()
    python_model = mlflow.pyfunc.load_model(f"models:/{registry.model_name}/{key.version}").unwrap_python_model()
    model = python_model.model.eval()
    if family_of(model) == LORA_FAMILY:  # a caption classifier: no prompts, no embedding space to search
        return ServedModel(name=registry.model_name, version=key.version, model=model, spec=dict(python_model.spec),
                           prompt_emb=np.zeros((len(DIGIT_PROMPTS), 0), np.float32), text_scale=1.0,
                           index=SearchIndex(), loaded_at=time.time(), family=LORA_FAMILY)
    index = build_search_index(model, iter_lake_inputs(inputs_root) if inputs_root else (), encode_texts)
    return ServedModel(name=registry.model_name, version=key.version, model=model, spec=dict(python_model.spec),
                       prompt_emb=build_prompt_embeddings(model, encode_texts(list(DIGIT_PROMPTS))),
                       text_scale=model.logit_scale(TEXT), index=index, loaded_at=time.time())
