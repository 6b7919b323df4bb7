"""`flywheel lineage VERSION|RUN_ID`: a model version's (or a run's) whole chain, from the run summaries and
the registry: DVC versions → GX result → Feast feature service → MLflow run → model version → gate decision
→ Prefect flow run → drift checks since.

`build_lineage` is a pure function of what was read (the run's summary, the version's tags and aliases,
the summaries of later runs); `read_lineage` reads them; the CLI (flows/cli_lineage.py) prints the steps.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from flows.run_links import evidently_report_url, file_url
from flows.settings import Settings

DRIFT_CHECKS_SHOWN = 10  # the latest drift checks listed; the rest are counted


class LineageNotFound(LookupError):
    """Neither a run id under runs/ nor a version of the registered model."""


@dataclass(frozen=True)
class Step:
    """One link of the chain: what it is (`value`), where to open it (`url`, None: nowhere), and more."""

    kind: str  # "DVC versions", "GX result", … (LINEAGE_STEPS)
    value: str
    url: str | None = None
    detail: str = ""


LINEAGE_STEPS = ("DVC versions", "GX result", "Feast feature service", "MLflow run", "model version", "gate decision",
                 "Prefect flow run", "drift checks since")


@dataclass(frozen=True)
class VersionFacts:
    """What the registry says about a version: its tags and aliases, and its training run's experiment."""

    name: str
    version: str
    tags: Mapping[str, str]
    aliases: tuple[str, ...] = ()
    experiment_id: str | None = None


@dataclass(frozen=True)
class Urls:
    """How to address each UI's page (flows/run_links.py), given so that building stays pure."""

    model_version: Callable[[str, str], str]  # (model name, version) -> MLflow page
    mlflow_run: Callable[[str, str], str]  # (experiment id, run id) -> MLflow page
    home: Path  # FLYWHEEL_HOME: DVC paths are relative to it


@dataclass
class Lineage:
    run_id: str
    steps: list[Step] = field(default_factory=list)

    def of(self, kind: str) -> list[Step]:
        return [s for s in self.steps if s.kind == kind]


def _dvc_steps(summary: Mapping[str, Any], tags: Mapping[str, str], home: Path) -> list[Step]:
    versions = dict(summary.get("data_versions") or {})
    if not versions:  # a version made before summaries kept them: its data.* tags
        versions = {k.removeprefix("data."): v for k, v in tags.items() if k.startswith("data.")}
    if not versions:
        return [Step("DVC versions", "none recorded (the run stopped before the version stage)")]
    return [Step("DVC versions", f"{name}: {value}", file_url(home / value.split("@", 1)[0]))
            for name, value in versions.items()]


def _gx_step(summary: Mapping[str, Any]) -> Step:
    validate = (summary.get("stages") or {}).get("validate")
    if not validate:
        return Step("GX result", "no batch validated in this run" + (" (a retrain: the window's batches were "
                                                                    "validated by the runs that ingested them)"
                                                                    if str(summary.get("source", "")).startswith("retrain") else ""))
    stats = validate.get("expectations") or {}
    counts = (f"{stats.get('successful_expectations')}/{stats.get('evaluated_expectations')} expectations met, "
              f"{validate.get('rows_quarantined', 0)} of {validate.get('rows_in')} rows quarantined") if stats else ""
    computed_by = ((summary.get("cache") or {}).get("validate") or {}).get("computed_by")
    run_name = validate.get("gx_run_name") or computed_by or summary.get("run_id")
    page = validate.get("data_docs_page") or validate.get("data_docs")
    return Step("GX result", f"run name {run_name}: {counts}".rstrip(": "), file_url(page) if page else None,
                f"batch {summary.get('batch_id')}" + (f", reused from run {computed_by}" if computed_by and
                                                      computed_by != summary.get("run_id") else ""))


def _feast_step(tags: Mapping[str, str], summary: Mapping[str, Any], home: Path) -> Step:
    service = tags.get("feature_service")
    features = (summary.get("data_versions") or {}).get("features") or tags.get("data.features")
    if service is None and not (summary.get("train") or {}):
        return Step("Feast feature service", "none: no model was trained in this run")
    return Step("Feast feature service", f"{service or 'training'}" + (f" (feature tables {features})" if features else ""),
                file_url(home / "feast"))


def _gate_step(facts: VersionFacts, gate: Mapping[str, Any], url: str) -> Step:
    passed = gate.get("passed") if gate else {"true": True, "false": False}.get(facts.tags.get("gate.passed", ""))
    if passed is None:
        return Step("gate decision", "not gated yet", url)
    champion = (gate.get("lineage") or {}).get("champion_version") if gate else facts.tags.get("gate.champion_version")
    against = f"against champion v{champion}" if champion and champion != "None" else "against no champion"
    reason = (gate.get("reason") if gate else facts.tags.get("gate.reason")) or ""
    return Step("gate decision", f"{'PASSED' if passed else 'REJECTED'} {against}", url, reason)


def _drift_steps(summary: Mapping[str, Any], later: Sequence[Mapping[str, Any]], version: str | None) -> list[Step]:
    """This run's drift check and every later run's, newest first; with a version, only checks against it."""
    checks = [s for s in [summary, *later] if (s.get("monitor") or {}).get("status") in ("drift", "no_drift")
              and (version is None or str(s["monitor"].get("champion")) == str(version))]
    checks.sort(key=lambda s: s.get("started_at", ""), reverse=True)
    if not checks:
        against = f" against v{version}" if version else ""
        return [Step("drift checks since", f"none yet{against}")]
    steps = []
    for s in checks[:DRIFT_CHECKS_SHOWN]:
        monitor = s["monitor"]
        share = monitor.get("drifted_share")
        what = (f"{'DRIFT' if monitor.get('drift_detected') else 'no drift'} on batch {monitor.get('batch')} "
                f"vs v{monitor.get('champion')}" + (f", drifted share {share:.2f}" if isinstance(share, float) else ""))
        detail = f"run {s['run_id']}" + (f"; Evidently: {evidently_report_url(monitor)}"
                                          if monitor.get("evidently_snapshot") else "")
        steps.append(Step("drift checks since", what, file_url(monitor["report"]) if monitor.get("report") else None, detail))
    if len(checks) > DRIFT_CHECKS_SHOWN:
        steps.append(Step("drift checks since", f"… and {len(checks) - DRIFT_CHECKS_SHOWN} earlier ones"))
    return steps


def build_lineage(summary: Mapping[str, Any], facts: VersionFacts | None, later: Sequence[Mapping[str, Any]],
                  urls: Urls) -> Lineage:
    """The chain of one run (`summary`) and the version it registered (`facts`, None: it registered none),
    with the drift checks of `later` runs against that version (every later check when there is none)."""
    tags = facts.tags if facts else {}
    lineage = Lineage(summary["run_id"])
    steps = lineage.steps
    steps += _dvc_steps(summary, tags, urls.home)
    steps.append(_gx_step(summary))
    steps.append(_feast_step(tags, summary, urls.home))
    train = summary.get("train") or {}
    mlflow_run = train.get("mlflow_run_id") or tags.get("training_run")
    if mlflow_run:
        experiment = facts.experiment_id if facts else None
        steps.append(Step("MLflow run", mlflow_run, urls.mlflow_run(experiment, mlflow_run) if experiment else None,
                          f"{train.get('rows', '?')} rows from {len(train.get('training_batches', []))} batch(es)"
                          if train else ""))
    else:
        steps.append(Step("MLflow run", "none: no model was trained in this run"))
    if facts is not None:
        page = urls.model_version(facts.name, facts.version)
        aliases = " ".join(f"@{a}" for a in facts.aliases)
        steps.append(Step("model version", f"{facts.name} v{facts.version}" + (f" {aliases}" if aliases else ""), page,
                          "its description is the model card"))
        steps.append(_gate_step(facts, summary.get("gate") or {}, page))
    else:
        steps.append(Step("model version", "none registered by this run"))
        steps.append(Step("gate decision", "none"))
    prefect = (summary.get("links") or {}).get("prefect_flow_run")
    steps.append(Step("Prefect flow run", summary["run_id"], prefect,
                      "" if prefect else "no flow run recorded (a --plain run, or one made before flow runs were linked)"))
    steps += _drift_steps(summary, later, facts.version if facts else None)
    return lineage


# ---- reading what build_lineage needs -----------------------------------------------------------


def _summaries(settings: Settings) -> list[dict[str, Any]]:
    runs = settings.paths.runs
    found = []
    for path in sorted(runs.glob("*/summary.json")) if runs.exists() else []:
        try:
            found.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue  # a summary being written; the next look finds it whole
    return found


def _version_facts(settings: Settings, version: str) -> VersionFacts | None:
    from mlflow.exceptions import MlflowException

    from flows.stage_config import registry_for

    registry = registry_for(settings)
    client = registry.client()
    try:
        mv = client.get_model_version(registry.model_name, version)
    except MlflowException:
        return None
    aliases = tuple(sorted(str(a) for a in (mv.aliases or ())))
    try:
        experiment = client.get_run(mv.run_id).info.experiment_id
    except MlflowException:
        experiment = None
    return VersionFacts(registry.model_name, str(mv.version), dict(mv.tags), aliases, experiment)


def read_lineage(settings: Settings, key: str) -> Lineage:
    """The lineage of `key`: a run id under runs/, or a version of the registered model (`3` or `v3`), whose
    registering run is its `flow_run` tag. LineageNotFound names what was looked for."""
    from flows.run_links import mlflow_run_url, model_version_url

    summaries = _summaries(settings)
    by_run = {s["run_id"]: s for s in summaries}
    facts: VersionFacts | None = None
    if key in by_run:
        summary = by_run[key]
        version = (summary.get("model") or {}).get("version")
        facts = _version_facts(settings, str(version)) if version else None
    else:
        version = key.removeprefix("v")
        facts = _version_facts(settings, version) if version.isdigit() else None
        if facts is None:
            known = ", ".join(list(by_run)[-5:]) or "none"
            raise LineageNotFound(f"{key!r} is neither a run id under {settings.paths.runs} (latest: {known}) nor a "
                                  f"version of {settings.params.registry.model_name}")
        run_id = facts.tags.get("flow_run", "")
        summary = by_run.get(run_id) or {"run_id": run_id or "?", "source": "unknown: no summary of the run that "
                                                                             "registered this version under runs/"}
    later = [s for s in summaries if s.get("started_at", "") > summary.get("started_at", "") and s is not summary]
    urls = Urls(model_version=lambda name, v: model_version_url(settings, name, v),
                mlflow_run=lambda experiment, run: mlflow_run_url(settings, experiment, run), home=settings.paths.home)
    return build_lineage(summary, facts, later, urls)
