"""All drift checks of one current window against the champion's reference window, and the one result.

Checks (each names what drifted):
- `data_drift`: tabular features, Evidently's DataDriftPreset with distance methods (`monitoring.drift`);
  a check alarms when any feature drifts (one quiet microphone is one or two audio features, far below
  a dataset "drifted share"), the share is reported beside it;
- `embedding_drift`: the champion's embeddings, per modality (`monitoring.model_drift`);
- `prediction_drift`: the class mix of the champion's zero-shot predictions, per modality; given the task's
  class names, each judged modality also lists every class's share on both sides by name, and the mix
  becomes an Evidently snapshot (`monitoring.class_mix`, `monitoring.model_drift`);
- `data_quality`: missing and out-of-range shares, per feature (`monitoring.quality`);
- `performance`: accuracy on delayed labels, per modality, when enough labels arrived.
A side that lacks a part (no features in an inference log, no labels yet) skips that check; a skip
is recorded with its reason, never counted as "no drift" silently. Pure.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from monitoring.drift import DriftParams, DriftResult, compute_drift
from monitoring.class_mix import compute_class_mix
from monitoring.model_drift import (ModelDriftParams, build_prediction_report, compute_embedding_drift,
                                    compute_prediction_drift)
from monitoring.quality import QualityParams, compute_performance, compute_quality

CHECKS: tuple[str, ...] = ("data_drift", "embedding_drift", "prediction_drift", "data_quality", "performance")


@dataclass
class MonitorData:
    """One window as the checks see it; every part may be empty."""

    features: pd.DataFrame | None = None  # one row per sample: the tabular features
    embeddings: dict[str, np.ndarray] = field(default_factory=dict)  # modality -> (N, D) champion embeddings
    predictions: dict[str, np.ndarray] = field(default_factory=dict)  # modality -> (N,) zero-shot class
    correct: dict[str, np.ndarray] = field(default_factory=dict)  # modality -> (L,) 1/0 on labelled rows


@dataclass(frozen=True)
class CheckParams:
    """Every check's thresholds, built once from params.yaml's `monitor:`."""

    drift: DriftParams
    model: ModelDriftParams
    quality: QualityParams


@dataclass
class MonitorResult:
    """Which checks drifted and on what (`findings`: "check:feature_or_modality"), with the evidence."""

    drift_detected: bool
    drifted_checks: list[str]
    findings: list[str]
    checks: dict[str, dict[str, Any]]  # check -> {"status": drift|no_drift|skipped, "items": {...}, ...}
    data_drift: DriftResult | None = None  # with the Evidently snapshot, for the report and the workspace
    prediction_report: Any = None  # the Evidently snapshot of the judged class mixes, by class name

    def to_summary(self) -> dict[str, Any]:
        return {"drift_detected": self.drift_detected, "drifted_checks": self.drifted_checks,
                "findings": self.findings, "checks": self.checks}


def run_checks(reference: MonitorData, current: MonitorData, numerical: list[str], categorical: list[str],
               params: CheckParams, classes: Sequence[str] | None = None) -> MonitorResult:
    """Run every check both windows have data for; `numerical`/`categorical` name the feature columns.
    `classes`: the task's class names, index k naming class k of the predictions; without them the
    prediction check gives its scores only (no class mix, no snapshot)."""
    checks: dict[str, dict[str, Any]] = {}
    drift_result = None
    if _has_rows(reference.features) and _has_rows(current.features):
        usable = [c for c in (*numerical, *categorical)
                  if reference.features[c].notna().any() and current.features[c].notna().any()]
        num, cat = [c for c in usable if c in numerical], [c for c in usable if c in categorical]
        drift_result = compute_drift(reference.features, current.features, num, cat, params.drift)
        checks["data_drift"] = _check({c: {k: v for k, v in e.items()} for c, e in drift_result.per_column.items()},
                                      drifted_share=drift_result.drifted_share,
                                      dataset_drift=drift_result.drift_detected,
                                      unusable=[c for c in (*numerical, *categorical) if c not in usable])
        checks["data_quality"] = _check(compute_quality(reference.features, current.features, list(numerical),
                                                        list(categorical), params.quality))
    else:
        checks["data_drift"] = checks["data_quality"] = _skipped("no tabular features on one side")
    checks["embedding_drift"] = _per_modality(
        reference.embeddings, current.embeddings, params.model.min_rows,
        lambda r, c: compute_embedding_drift(r, c, params.model).to_dict())
    checks["prediction_drift"] = _per_modality(
        reference.predictions, current.predictions, params.model.min_rows,
        lambda r, c: compute_prediction_drift(r, c, params.model).to_dict())
    prediction_report = None
    judged = checks["prediction_drift"]["items"]
    if classes is not None and judged:
        for modality, entry in judged.items():
            entry["class_mix"] = compute_class_mix(reference.predictions[modality], current.predictions[modality], classes)
        prediction_report = build_prediction_report({m: reference.predictions[m] for m in judged},
                                                    {m: current.predictions[m] for m in judged}, classes,
                                                    params.model.prediction_threshold)
    checks["performance"] = _per_modality(
        reference.correct, current.correct, 1, lambda r, c: compute_performance(r, c, params.quality))
    drifted_checks = [name for name in CHECKS if checks[name]["status"] == "drift"]
    findings = [f"{name}:{item}" for name in drifted_checks
                for item, entry in checks[name]["items"].items() if entry.get("drifted")]
    return MonitorResult(bool(drifted_checks), drifted_checks, findings, checks, drift_result, prediction_report)


def _has_rows(frame: pd.DataFrame | None) -> bool:
    return frame is not None and not frame.empty


def _check(items: dict[str, dict[str, Any]], **extra: Any) -> dict[str, Any]:
    drifted = any(entry.get("drifted") for entry in items.values())
    return {"status": "drift" if drifted else "no_drift", "items": items, **extra}


def _skipped(reason: str) -> dict[str, Any]:
    return {"status": "skipped", "reason": reason, "items": {}}


def _per_modality(reference: dict[str, np.ndarray], current: dict[str, np.ndarray], min_rows: int, judge) -> dict[str, Any]:
    items, skipped = {}, {}
    for modality in sorted(set(reference) | set(current)):
        ref, cur = reference.get(modality), current.get(modality)
        if ref is None or cur is None or len(ref) < min_rows or len(cur) < min_rows:
            skipped[modality] = f"rows: reference {0 if ref is None else len(ref)}, current {0 if cur is None else len(cur)} (need {min_rows})"
            continue
        items[modality] = judge(ref, cur)
    if not items:
        return {**_skipped("no modality with data on both sides"), "skipped_modalities": skipped}
    return {**_check(items), "skipped_modalities": skipped}
