"""Serving wiring: the API app for `flywheel serve-model`, and the batch scoring flow.

Settings become the holder (registry alias + lake inputs), the payload limits and the inference
log here; the app itself (`models.serving.app`) takes those objects and reads nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass

from flows.settings import Settings
from flows.stage_config import registry_for


def payload_limits(settings: Settings):
    from models.serving.payloads import PayloadLimits

    clean = settings.params.clean  # the API refuses what the clean stage would quarantine
    return PayloadLimits(clean.max_image_pixels, clean.max_audio_seconds, settings.params.serve.max_text_chars)


def build_holder(settings: Settings, alias: str | None = None, poll_seconds: float | None = None):
    """A holder following `alias` (default @champion) in this settings' registry."""
    from flows.families import configured_family
    from models.registry import CHAMPION
    from models.serving.holder import ModelHolder
    from models.serving.loading import load_served_model, resolve_alias

    registry, inputs_root = registry_for(settings), settings.paths.model_inputs
    alias = alias or CHAMPION
    return ModelHolder(lambda: resolve_alias(registry, alias, inputs_root),
                       lambda key: load_served_model(registry, key, inputs_root, settings.task,
                                                     [configured_family(settings)]),
                       poll_seconds or settings.params.serve.alias_poll_seconds)


def build_app(settings: Settings, poll_seconds: float | None = None):
    """The API serving @champion, logging to FLYWHEEL_HOME/inference."""
    from models.registry import CHAMPION
    from models.serving.app import create_app
    from models.serving.inference_log import InferenceLog

    return create_app(build_holder(settings, CHAMPION, poll_seconds), InferenceLog(settings.paths.inference, "api"),
                      payload_limits(settings), settings.params.serve.max_body_bytes, alias=CHAMPION)


def serve_model(settings: Settings, host: str, port: int) -> None:
    """Run the API with uvicorn until interrupted (one process; the model is shared by its threads)."""
    import torch
    import uvicorn

    torch.set_num_threads(settings.params.serve.torch_threads)

    uvicorn.run(build_app(settings), host=host, port=port, log_level="warning", access_log=False)


@dataclass(frozen=True)
class BatchScoring:
    batch_id: str
    model_version: str
    records: int
    per_modality: dict[str, int]


def score_batch(settings: Settings, batch_id: str) -> BatchScoring:
    """The champion scores every item of a batch's model inputs into the inference log (source "batch")."""
    from flows.families import configured_family
    from models.inputs import has_model_inputs, iter_model_inputs
    from models.registry import CHAMPION
    from models.serving.batch import score_model_inputs
    from models.serving.holder import ServingKey
    from models.serving.inference_log import InferenceLog
    from models.serving.loading import load_served_model

    folder = settings.paths.batch_inputs(batch_id)
    if not has_model_inputs(folder):
        raise FileNotFoundError(f"batch {batch_id!r} has no model inputs at {folder}; run the lifecycle on it first")
    registry = registry_for(settings)
    version = registry.alias_version(CHAMPION)
    if version is None:
        raise ValueError(f"no @champion in the registry {registry.model_name!r}: nothing to score with")
    served = load_served_model(registry, ServingKey(version), None, settings.task, [configured_family(settings)])
    records = score_model_inputs(served, batch_id, iter_model_inputs(folder))
    log = InferenceLog(settings.paths.inference, "batch")
    try:
        log.write_many(records)
    finally:
        log.close()
    counts: dict[str, int] = {}
    for record in records:
        counts[record["modality"]] = counts.get(record["modality"], 0) + 1
    return BatchScoring(batch_id, served.version, len(records), counts)
