"""The batch scoring Prefect flow under Prefect's test harness: every present image, audio clip and
caption of each batch lands in the inference log exactly once, with the champion's version."""

from __future__ import annotations

import pytest

from flows.batch_scoring import batch_scoring_flow
from flows.stage_config import registry_for
from models.inputs import iter_model_inputs, save_model_inputs
from models.registry import CHAMPION
from models.serving.inference_log import load_inference_log
from tests.prefect_support import prefect_harness
from tests.unit.serving_support import build_registry, demo_inputs

pytestmark = pytest.mark.slow

MODALITY_PRESENT = {"image": "has_image", "audio": "has_audio", "text": "has_caption"}


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    with prefect_harness(tmp_path_factory):
        yield


@pytest.fixture(scope="module")
def settings(harness, tmp_path_factory):
    """Two registered versions (@champion v1) and two batches of model inputs (24 and 10 items)."""
    settings = build_registry(tmp_path_factory.mktemp("home"))
    save_model_inputs(settings.paths.batch_inputs("batch-2") / "part-00000.npz", demo_inputs(10))
    return settings


def expected_rows(settings, batch_id: str) -> set[tuple[str, str, str]]:
    """(batch, sample, modality) of every item the batch holds: what scoring must log, once each."""
    rows = set()
    for inputs in iter_model_inputs(settings.paths.batch_inputs(batch_id)):
        for modality, flag in MODALITY_PRESENT.items():
            rows |= {(batch_id, str(s), modality) for s in inputs.sample_id[getattr(inputs, flag)]}
    return rows


def batch_log(settings):
    log = load_inference_log(settings.paths.inference)
    return log[log["source"] == "batch"]


def test_the_flow_logs_one_record_per_scored_row_with_the_champion_version(settings):
    results = batch_scoring_flow(settings, ["batch-1", "batch-2"])
    assert [(r.batch_id, r.model_version) for r in results] == [("batch-1", "1"), ("batch-2", "1")]
    log = batch_log(settings)
    logged = list(zip(log["batch_id"], log["sample_id"], log["modality"]))
    expected = expected_rows(settings, "batch-1") | expected_rows(settings, "batch-2")
    assert len(logged) == len(set(logged)) == len(expected) == sum(r.records for r in results)  # none twice
    assert set(logged) == expected
    assert set(log["model_version"]) == {"1"} and set(log["status"]) == {200}
    assert log["prediction"].notna().all() and log["embedding_norm"].notna().all()
    assert results[0].per_modality == {"image": 24, "audio": 18, "text": 16}


def test_after_a_promotion_the_flow_scores_with_the_new_champion(settings):
    before = len(batch_log(settings))
    registry = registry_for(settings)
    registry.client().set_registered_model_alias(registry.model_name, CHAMPION, "2")
    [result] = batch_scoring_flow(settings, ["batch-2"])
    log = batch_log(settings).iloc[before:]
    assert result.model_version == "2" and len(log) == result.records == len(expected_rows(settings, "batch-2"))
    assert set(log["model_version"]) == {"2"}


def test_a_batch_without_model_inputs_fails_the_flow_and_logs_nothing(settings):
    before = len(batch_log(settings))
    with pytest.raises(FileNotFoundError, match="no model inputs"):
        batch_scoring_flow(settings, ["batch-404"])
    assert len(batch_log(settings)) == before
