"""The model card on a real MLflow store (SQLite + local artifacts): registering writes a "not gated yet"
card and the training run's note; the gate rewrites both with its verdict; a re-run of the gate on the
promoted version writes the same card; a rejected version's card says why."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from flows.exactly_once import gate_once
from flows.model_stages import TrainOutcome, stage_register
from flows.settings import load_settings
from flows.stage_config import registry_for
from models.registry import CHAMPION
from tests.conftest import example_params
from tests.flows.model_support import log_untrained_imagebind

pytestmark = pytest.mark.slow  # two log_model calls and two gates on a 40-row golden set

LENIENT = {"zero_shot_image_acc": {"min": 0.0, "max_drop": 1.0}, "p95_latency_ms": {"max": 60_000.0}}
STRICT = {**LENIENT, "model_size_mb": {"max": 0.001}}  # no model is that small: a rejection that load cannot flip


def settings_with(home: Path, golden: Path, thresholds: dict, name: str):
    raw = example_params()
    raw["task"]["golden"] = str(golden)
    raw["gate"]["families"]["imagebind"]["thresholds"] = thresholds
    raw["gate"]["families"]["imagebind"]["slices"] = {"class": {"zero_shot_image_acc": {"min": 0.0, "max_drop": 1.0}}}
    raw["gate"]["min_slice_rows"] = 3
    params = home / name
    params.write_text(yaml.safe_dump(raw))
    return load_settings(home, params)


def train_outcome(settings, seed: int) -> TrainOutcome:
    """A registered-to-be model of the task's input size, with a plot on its run as training logs them."""
    import matplotlib.pyplot as plt
    import mlflow

    logged = log_untrained_imagebind(settings, registry_for(settings), seed, f"card-test-{seed}")
    figure, axis = plt.subplots()
    axis.plot([0, 1], [0, 1])
    mlflow.MlflowClient().log_figure(logged.run_id, figure, "plots/recall_at_k.png")
    plt.close(figure)
    return TrainOutcome(logged.run_id, logged.model_uri, {}, [f"batch-{seed}a", f"batch-{seed}b"], 40, 40, 1.0,
                        "golden/unused@md5")


def descriptions(settings, version: str) -> tuple[str, str]:
    registry = registry_for(settings)
    client = registry.client()
    mv = client.get_model_version(registry.model_name, version)
    return mv.description, client.get_run(mv.run_id).data.tags.get("mlflow.note.content")


def test_the_gate_writes_the_card_and_the_runs_note(tmp_path, small_golden_batch):
    lenient = settings_with(tmp_path, small_golden_batch, LENIENT, "lenient.yaml")
    strict = settings_with(tmp_path, small_golden_batch, STRICT, "strict.yaml")
    registry = registry_for(lenient)
    lineage = {"data_version": "lake/inputs@md5-1", "data.inputs": "lake/inputs@md5-1",
               "data.features": "lake/features@md5-2", "flow_run": "flow-1", "feature_service": "training"}

    first = stage_register(lenient, train_outcome(lenient, 0), lineage)
    card, note = descriptions(lenient, first)
    assert card.startswith(f"# {registry.model_name} v{first}\n") and "**NOT GATED YET**" in card
    assert "- training window: 2 batches: `batch-0a`, `batch-0b`" in card
    assert "- data version features: `lake/features@md5-2`" in card
    assert note.startswith(f"Trained by flywheel run `flow-1`, family `imagebind`; registered as "
                           f"[{registry.model_name} v{first}](#/models/{registry.model_name}/versions/{first})")
    assert note.splitlines()[0].endswith("Gate: not run yet.")

    decision = gate_once(lenient, first, "flow-1")
    assert decision["passed"] and registry.alias_version(CHAMPION) == first
    card, note = descriptions(lenient, first)
    assert "**PASSED** by the gate against no champion" in card and "Promoted: the gate made this version `@champion`." in card
    assert f"`{decision['lineage']['golden_version']}` (40 rows)" in card
    assert "| zero_shot_image_acc | min |" in card and "| p95_latency_ms | max |" in card
    assert "| class=" in card  # the golden-set metrics per slice
    run_id = registry.client().get_model_version(registry.model_name, first).run_id
    assert f"![recall_at_k.png](get-artifact?path=plots%2Frecall_at_k.png&run_uuid={run_id})" in card
    assert note.splitlines()[0].endswith("Gate: **passed**.")
    assert gate_once(lenient, first, "flow-1")["lineage"]["champion_after"] == first  # the recorded decision stands
    assert descriptions(lenient, first) == (card, note)  # and the card it wrote is the same text

    second = stage_register(strict, train_outcome(strict, 1), {**lineage, "flow_run": "flow-2"})
    assert not gate_once(strict, second, "flow-2")["passed"]
    card, note = descriptions(strict, second)
    assert f"**REJECTED** by the gate against `@champion` v{first}" in card
    why = card.index("## Why it was rejected")
    assert why < card.index("## Gate checks") and "- model_size_mb max: " in card[why:card.index("## Gate checks")]
    assert "| model_size_mb | max |" in card and "**FAIL**" in card and "vs bound 0.0010" in card
    assert note.startswith("Trained by flywheel run `flow-2`") and "The gate's reason: model_size_mb max" in note
    assert registry.alias_version(CHAMPION) == first
