"""Reference bounds on real batches: the clean rows of earlier accepted batches in the lake bound the next one."""

from __future__ import annotations

import pytest

from features.io import save_quarantine
from features.validate import BatchRejected
from flows.data_stages import stage_clean, stage_ingest, stage_validate
from flows.settings import load_settings

from tests.conftest import PROJECT


def _accept(settings, source):
    """Ingest, clean and validate a landing batch as the pipeline does, marking it accepted."""
    ingested = stage_ingest(settings, source)
    cleaned = stage_clean(settings, ingested.batch_dir)
    _, report, statistics = stage_validate(settings, ingested.batch_id, cleaned.rows)
    save_quarantine(settings.paths.quarantine, ingested.batch_id, report)
    return statistics


def test_a_batch_far_outside_the_lakes_reference_stops_with_the_evidence(demo_batch_factory, tmp_path):
    settings = load_settings(tmp_path / "home", PROJECT / "params.yaml")
    first = _accept(settings, demo_batch_factory(samples=150, seed=31, fault_rate=0.0))
    assert first["reference_batches"] == 0  # nothing to compare the first batch with
    second = _accept(settings, demo_batch_factory(samples=150, seed=32, fault_rate=0.0))
    assert second["reference_batches"] == 1 and second["reference_expectations"] > 0

    noisy = stage_ingest(settings, demo_batch_factory(samples=150, seed=33, fault_rate=0.0, drift="noise"))
    rows = stage_clean(settings, noisy.batch_dir).rows
    with pytest.raises(BatchRejected) as rejected:
        stage_validate(settings, noisy.batch_id, rows)
    error = rejected.value
    assert error.expectation == "expect_column_mean_to_be_between(audio_seconds)"
    assert error.observed > error.bound and len(error.sample_ids) == 5
    assert "reference: 2 batches" in str(error) and "rows furthest from the reference mean" in str(error)
    assert (settings.paths.gx / "profiles" / f"{noisy.batch_id}.json").exists()  # the profile it was held to

    ordinary = _accept(settings, demo_batch_factory(samples=150, seed=34, fault_rate=0.0))
    assert ordinary["reference_batches"] == 2  # the rejected batch is not part of the reference
