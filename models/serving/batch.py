"""Batch scoring: the champion scores a whole batch's model inputs and returns inference-log records,
the same fields an API request logs (source "batch", the sample and batch ids added)."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from models.inputs import ModelInputs
from models.serving.payloads import input_summary
from models.serving.scoring import ServedModel, embedding_summary, prediction_fields
from models.serving.spec import present_rows

BATCH_ENDPOINT = "batch/classify"


def score_model_inputs(served: ServedModel, batch_id: str, shards: Iterable[ModelInputs]) -> list[dict[str, Any]]:
    """One record per present item of each modality the model takes, shard by shard; the lake's inputs
    become model inputs as the family's serving spec says (`lake_values`), as the API prepares a payload."""
    records: list[dict[str, Any]] = []
    for inputs in shards:
        for modality in served.modalities:
            rows = present_rows(inputs, modality)
            if not len(rows):
                continue
            started = time.perf_counter()
            values = served.serving.lake_values(inputs, modality, rows)
            p = served.serving.predict(modality, values)
            per_row_ms = (time.perf_counter() - started) * 1000 / len(rows)
            embedded = ([embedding_summary(e, float(n)) for e, n in zip(p.embeddings, p.norms)]
                        if p.embeddings is not None else [{} for _ in rows])  # no embedding to summarise
            for j, i in enumerate(rows):
                features = ({"text_chars": len(inputs.caption[i])} if modality == "text"
                            else input_summary(modality, values[j]))
                label = int(p.labels[j])
                records.append({
                    "endpoint": BATCH_ENDPOINT, "status": 200, "model_name": served.name, "model_version": served.version,
                    "modality": modality, "latency_ms": round(per_row_ms, 3), "sample_id": str(inputs.sample_id[i]),
                    "batch_id": batch_id, **features, **embedded[j],
                    **prediction_fields(served.task, label, float(p.probs[j, label])),
                })
    return records
