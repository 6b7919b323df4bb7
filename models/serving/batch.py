"""Batch scoring: the champion scores a whole batch's model inputs and returns inference-log records,
the same fields an API request logs (source "batch", the sample and batch ids added)."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from models.families import LORA_FAMILY
from models.inputs import ModelInputs
from models.serving.payloads import input_summary
from models.serving.scoring import (
    ServedModel,
    embed_rows,
    embedding_summary,
    modality_values,
    prediction_fields,
    present_rows,
    zero_shot,
)

BATCH_ENDPOINT = "batch/classify"


def score_model_inputs(served: ServedModel, batch_id: str, shards: Iterable[ModelInputs],
                       caption_minilm) -> list[dict[str, Any]]:
    """One record per present item of each modality the model takes, shard by shard.

    `caption_minilm(captions) -> (N, 384)` encodes captions with the frozen text encoder.
    """
    records: list[dict[str, Any]] = []
    for inputs in shards:
        for modality in served.modalities:  # a lora-family model reads captions only
            rows = present_rows(inputs, modality)
            if not len(rows):
                continue
            started = time.perf_counter()
            if served.family == LORA_FAMILY:
                from models.lora_family import classify_captions

                values = inputs.caption[rows]
                labels, probs = classify_captions(served.model, [str(c) for c in values])
                embedded = [{} for _ in rows]  # a classifier has no embedding to summarise
            else:
                values = modality_values(inputs, modality, rows, caption_minilm)
                embeddings, norms = embed_rows(served.model, modality, values)
                labels, probs = zero_shot(embeddings, served.prompt_emb, served.text_scale)
                embedded = [embedding_summary(e, float(n)) for e, n in zip(embeddings, norms)]
            per_row_ms = (time.perf_counter() - started) * 1000 / len(rows)
            for j, i in enumerate(rows):
                features = ({"text_chars": len(inputs.caption[i])} if modality == "text"
                            else input_summary(modality, values[j]))
                records.append({
                    "endpoint": BATCH_ENDPOINT, "status": 200, "model_name": served.name, "model_version": served.version,
                    "modality": modality, "latency_ms": round(per_row_ms, 3), "sample_id": str(inputs.sample_id[i]),
                    "batch_id": batch_id, **features, **embedded[j],
                    **prediction_fields(served.task, int(labels[j]), float(probs[j, labels[j]])),
                })
    return records
