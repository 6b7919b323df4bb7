"""Batch scoring as a Prefect flow: one task per batch, each a call to `flows.serving.score_batch`."""

from __future__ import annotations

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from flows.serving import BatchScoring, score_batch
from flows.settings import Settings

# Scoring appends to the inference log, so a cached or retried task would log a batch twice.
score_batch_task = task(score_batch, name="score-batch", cache_policy=NO_CACHE)


@flow(name="flywheel-batch-scoring", validate_parameters=False)
def batch_scoring_flow(settings: Settings, batch_ids: list[str]) -> list[BatchScoring]:
    """The champion scores each batch's model inputs into the inference log."""
    return [score_batch_task(settings, batch_id) for batch_id in batch_ids]
