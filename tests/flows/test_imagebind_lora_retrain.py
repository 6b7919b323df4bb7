"""`train.imagebind_lora`: retraining fine-tunes the ImageBind @champion through LoRA adapters.

Two plain lifecycle runs with the option on: the first has no champion and trains from scratch;
the second starts from v1's weights, trains adapters on the vision and audio trunks (and the
heads), merges them and is gated like any candidate. What a user checks: the MLflow run says
where training started, the version names the champion it was tuned from, and only attention
and head weights differ from that champion.
"""

from __future__ import annotations

import pytest
import torch
import yaml
from mlflow import MlflowClient

from flows.pipeline import run_stages
from flows.settings import load_settings
from flows.stage_config import registry_for
from models.registry import load_version
from tests.conftest import frequent_system_metrics, write_fast_lifecycle_params

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def lora_retrain(demo_batch_factory, tmp_path_factory, small_golden_batch):
    path = write_fast_lifecycle_params(tmp_path_factory.mktemp("params-iblora") / "params.yaml", golden=small_golden_batch)
    params = yaml.safe_load(path.read_text())
    params["train"].setdefault("imagebind_lora", {}).update(enabled=True, epochs_stage1=2, epochs_stage2=2)
    path.write_text(yaml.safe_dump(params))
    settings = load_settings(tmp_path_factory.mktemp("home-iblora"), path)
    with frequent_system_metrics():
        first = run_stages(settings, demo_batch_factory(samples=80, seed=11), run_id="iblora-1")
        second = run_stages(settings, demo_batch_factory(samples=80, seed=12), run_id="iblora-2")
    return settings, first, second


def test_the_first_training_starts_from_scratch_and_the_retraining_from_the_champion(lora_retrain) -> None:
    settings, first, second = lora_retrain
    client = MlflowClient(settings.tracking_uri)
    assert client.get_run(first.train["mlflow_run_id"]).data.params["train.init"] == "scratch"
    run = client.get_run(second.train["mlflow_run_id"])
    assert run.data.params["train.init"] == "champion v1"
    assert run.data.params["lora.r"] == "8" and run.data.params["train.epochs_stage1"] == "2"
    assert run.data.tags["fine_tuned_from"] == "1"
    assert second.model["version"] == "2" and second.gate["lineage"]["champion_version"] == "1"


def test_the_fine_tuned_version_differs_from_the_champion_in_attention_and_heads_only(lora_retrain) -> None:
    settings, _, second = lora_retrain
    registry = registry_for(settings)
    before = load_version(registry, "1").state_dict()
    after = load_version(registry, second.model["version"]).state_dict()
    assert before.keys() == after.keys()  # merged: the plain architecture, no adapter weights left
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    assert any(k.startswith("modality_trunks.vision.") and ".attn." in k for k in moved)
    assert any(k.startswith("modality_trunks.audio.") and ".attn." in k for k in moved)
    assert moved and all(".attn." in k or k.startswith("modality_heads.") for k in moved), sorted(moved)


def test_a_rerun_after_the_fine_tune_was_promoted_reuses_it(lora_retrain, demo_batch_factory) -> None:
    """@champion is now the fine-tune itself: the re-run must still find the training that started from
    v1 (its key names the version it started from), not fine-tune the fine-tune into a third version."""
    settings, _, second = lora_retrain
    again = run_stages(settings, demo_batch_factory(samples=80, seed=12), run_id="iblora-2-again")
    assert all(entry["cached"] for entry in again.cache.values()), again.cache
    assert again.model == second.model and again.train == second.train
    names = registry_for(settings).client().search_model_versions(f"name='{settings.params.registry.model_name}'")
    assert sorted(int(v.version) for v in names) == [1, 2]
