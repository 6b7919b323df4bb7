"""Register and gate so that repeating them after a crash changes nothing that already happened.

A run killed after the registry changed but before the stage's record was written
(flows/stage_cache.py) computes the stage again on resume. Registering again would add a second
version of the same training run, and gating a version that is @champion already fails (there is
nothing to compare). These wrappers look at what the registry holds first.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from flows.model_cards import write_model_card
from flows.model_stages import TrainOutcome, stage_gate, stage_register
from flows.settings import Settings
from flows.stage_config import registry_for


def registered_version_of(settings: Settings, training_run: str) -> str | None:
    """The lowest model version registered from `training_run` (an MLflow run id), None if none is."""
    registry = registry_for(settings)
    found = registry.client().search_model_versions(f"name='{registry.model_name}' and run_id='{training_run}'")
    return min((str(v.version) for v in found), key=int, default=None)


def close_abandoned_training_runs(settings: Settings, checkpoint_dir: Path) -> list[str]:
    """Mark KILLED the MLflow runs an earlier, killed attempt at this training left RUNNING (tagged with
    the same checkpoint folder); returns their ids."""
    from models.registry import EXPERIMENT

    registry = registry_for(settings)
    client = registry.client()
    experiment = client.get_experiment_by_name(EXPERIMENT)
    if experiment is None:
        return []
    found = client.search_runs([experiment.experiment_id],
                               f"tags.checkpoint_dir = '{checkpoint_dir}' and attributes.status = 'RUNNING'")
    for run in found:
        client.set_terminated(run.info.run_id, status="KILLED")
    return [run.info.run_id for run in found]


def training_start(settings: Settings, data_versions: dict[str, str]) -> str | None:
    """The version a LoRA fine-tune of the champion on `data_versions` starts from: @champion, unless
    @champion was itself trained on these very data versions (this training, promoted before the run
    was killed or re-run): then the version that one started from, so the training's key stays put."""
    from models.registry import CHAMPION

    registry = registry_for(settings)
    champion = registry.alias_version(CHAMPION)
    if champion is None:
        return None
    client = registry.client()
    mv = client.get_model_version(registry.model_name, champion)
    if all(mv.tags.get(f"data.{name}") == data_versions.get(name) for name in ("inputs", "features")):
        return client.get_run(mv.run_id).data.tags.get("fine_tuned_from")
    return champion


def register_once(settings: Settings, train: TrainOutcome, lineage: dict[str, str]) -> str:
    """`stage_register` unless a version of this training run exists (an earlier attempt registered it);
    then @challenger is set on it again, in case the attempt died before doing so."""
    from models.registry import CHALLENGER

    version = registered_version_of(settings, train.mlflow_run_id)
    if version is None:
        return stage_register(settings, train, lineage)
    registry = registry_for(settings)
    registry.client().set_registered_model_alias(registry.model_name, CHALLENGER, version)
    return version


def recorded_decision(settings: Settings, version: str) -> dict[str, Any] | None:
    """The gate decision recorded on `version` (its `gate.artifact` JSON), None when it has none."""
    registry = registry_for(settings)
    client = registry.client()
    mv = client.get_model_version(registry.model_name, version)
    artifact = mv.tags.get("gate.artifact")
    if artifact is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        path = client.download_artifacts(mv.run_id, artifact, tmp)
        return json.loads(Path(path).read_text())


def gate_once(settings: Settings, version: str, flow_run: str | None = None) -> dict[str, Any]:
    """`stage_gate` as a dict, unless `version` is @champion already with a recorded decision: an earlier
    attempt gated and promoted it, and that decision stands (a rejected version is gated again)."""
    from models.registry import CHAMPION

    if registry_for(settings).alias_version(CHAMPION) == str(version):
        decision = recorded_decision(settings, version)
        if decision is not None:
            lineage = decision.setdefault("lineage", {})
            lineage.setdefault("decision_artifact", registry_for(settings).version_tags(version).get("gate.artifact"))
            lineage["champion_after"] = str(version)
            write_model_card(settings, version, decision)  # the attempt may have died before writing it
            return decision
    return stage_gate(settings, version, flow_run).to_dict()
