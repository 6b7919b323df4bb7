"""The `lora` family: a caption → class classifier, peft adapters on the frozen MiniLM plus a linear
head, merged for serving (models.lora, models.lora_family; its stage side in flows.lora_stages)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from models.families import CAPTION_METRICS, LORA_FAMILY
from models.family import GoldenScores, TrainOutcome, TrainRequest

NO_EMBEDDINGS = ("the champion is a lora-family caption classifier: it has no ImageBind embeddings; "
                 "its caption classes are checked under prediction_drift and performance (modality text)")


class LoraFamily:
    """Captions only: /classify of text; votes, monitoring and the gate on captions."""

    name = LORA_FAMILY

    def metric_directions(self) -> dict[str, str]:
        return CAPTION_METRICS

    def owns(self, model: object) -> bool:
        from models.lora import CaptionClassifier

        return isinstance(model, CaptionClassifier)

    def train(self, request: TrainRequest) -> TrainOutcome:
        from flows.lora_stages import train_lora

        return train_lora(request)

    def score_golden(self, models: dict[str, Any], golden, settings) -> GoldenScores:
        from flows.lora_stages import score_lora_family

        return score_lora_family(settings, models, golden)

    def labelling_votes(self, model, shards: Iterable[Any], task):
        from flows.lora_stages import caption_votes

        return caption_votes(model, shards)

    def serving_spec(self, model, task, lake: Callable[[], Iterable[tuple[str, Any]]]):
        from models.lora_family import caption_serving_spec

        return caption_serving_spec(model)

    def observations(self, model, task):
        from models.lora_family import classify_captions
        from monitoring.observations import build_caption_monitor_data

        return lambda features, inputs, labels: build_caption_monitor_data(
            features, inputs, lambda captions: classify_captions(model, captions)[0], labels)

    def skipped_checks(self, model) -> dict[str, dict[str, Any]]:
        return {"embedding_drift": {"status": "skipped", "reason": NO_EMBEDDINGS, "items": {}}}

    def golden_plots(self, model, golden, task) -> tuple[dict[str, Any], dict[str, Any]]:
        """Optional member: the golden set's predicted class per row (captions only) and no retrieval curves:
        a caption classifier has no embeddings."""
        from models.lora_family import classify_captions

        return {"caption": classify_captions(model, list(golden.caption or []))[0]}, {}

    def train_cache_inputs(self, settings, data_versions: dict[str, str]) -> dict[str, Any]:
        from flows.families import source_digest

        return {"family_code": source_digest(__name__)}
