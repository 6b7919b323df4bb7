"""Drift of tabular features of a current batch against reference data, computed by Evidently.

Evidently picks the method per column: with at most 1,000 *reference* rows it reports
p-values (K-S, chi-square, Z), where small means drift; above that it reports distances
(Wasserstein, Jensen-Shannon), where large means drift. The per-column verdict is therefore
read from Evidently's own drift tests, never re-derived from a score with one fixed direction.
Pure: no file I/O (see `monitoring.workspace` for saving).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pandas as pd
from evidently import DataDefinition, Dataset, Report
from evidently.presets import DataDriftPreset

_VALUE_DRIFT = "evidently:metric_v2:ValueDrift"
_DRIFTED_COLUMNS_COUNT = "evidently:metric_v2:DriftedColumnsCount"
_VERDICTS = {"FAIL": True, "SUCCESS": False}  # Evidently's drift tests fail when drift is found


@dataclass(frozen=True)
class DriftParams:
    """When a batch counts as drifted; built once from params.yaml."""

    drift_share: float = 0.5  # dataset drift when at least this share of columns drift
    # None: Evidently's per-method default (0.05 for p-values, 0.1 for distances). A number is
    # applied to whatever method Evidently picks, so it means a p-value below 1,000 reference
    # rows and a distance above.
    column_threshold: float | None = None

    def __post_init__(self) -> None:
        if not 0.0 < self.drift_share <= 1.0:
            raise ValueError(f"drift_share must be in (0, 1], got {self.drift_share}")
        if self.column_threshold is not None and self.column_threshold <= 0:
            raise ValueError(f"column_threshold must be > 0 or None, got {self.column_threshold}")


@dataclass
class DriftResult:
    """The verdict and the per-column evidence behind it."""

    drift_detected: bool
    drifted_share: float
    drifted_columns: list[str]
    per_column: dict[str, dict[str, Any]]  # column -> {"score", "method", "threshold", "drifted"}
    reference_rows: int
    current_rows: int
    snapshot: Any  # the Evidently snapshot (to save / render)


def compute_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    numerical: list[str],
    categorical: list[str],
    params: DriftParams,
) -> DriftResult:
    """Run Evidently's DataDriftPreset with tests on the listed columns and read its verdicts.

    Nulls are dropped per column before the statistics, so a rise in missing values alone is
    not drift here; a column with no values at all in either frame raises ValueError.
    """
    columns = [*numerical, *categorical]
    _check_inputs(reference, current, columns)
    definition = DataDefinition(numerical_columns=list(numerical), categorical_columns=list(categorical))
    preset = DataDriftPreset(columns=columns, drift_share=params.drift_share, threshold=params.column_threshold)
    snapshot = Report([preset], include_tests=True).run(
        # Column subsets are new frames, so Evidently never touches the caller's frames.
        current_data=Dataset.from_pandas(current[columns], data_definition=definition),
        reference_data=Dataset.from_pandas(reference[columns], data_definition=definition),
    )
    # Through JSON, not .dict(): statuses become strings and numpy scalars plain numbers.
    summary = json.loads(snapshot.json())
    per_column, drifted_share, drift_detected = _read_summary(summary, columns)
    return DriftResult(
        drift_detected=drift_detected,
        drifted_share=drifted_share,
        drifted_columns=[column for column in columns if per_column[column]["drifted"]],
        per_column=per_column,
        reference_rows=len(reference),
        current_rows=len(current),
        snapshot=snapshot,
    )


def _check_inputs(reference: pd.DataFrame, current: pd.DataFrame, columns: list[str]) -> None:
    if not columns:
        raise ValueError("no columns to compare: numerical and categorical are both empty")
    duplicated = sorted({column for column in columns if columns.count(column) > 1})
    if duplicated:
        raise ValueError(f"columns listed twice (numerical and categorical are exclusive): {duplicated}")
    for name, frame in (("reference", reference), ("current", current)):
        if frame.empty:
            raise ValueError(f"the {name} frame is empty; drift needs rows in both frames")
        missing = [column for column in columns if column not in frame.columns]
        if missing:
            raise ValueError(f"the {name} frame lacks columns {missing}; it has {list(frame.columns)}")
        all_null = [column for column in columns if frame[column].isna().all()]
        if all_null:
            raise ValueError(f"the {name} frame has no values in columns {all_null}; drop them from the lists")


def _read_summary(summary: dict[str, Any], columns: list[str]) -> tuple[dict[str, dict[str, Any]], float, bool]:
    """Per-column scores and verdicts, the drifted share and the dataset verdict from a snapshot dict."""
    status_by_metric = {test["metric_config"]["metric_id"]: test["status"] for test in summary["tests"]}
    per_column: dict[str, dict[str, Any]] = {}
    drifted_share: float | None = None
    dataset_status: str | None = None
    for metric in summary["metrics"]:
        config = metric["config"]
        if config["type"] == _VALUE_DRIFT:
            status = status_by_metric.get(metric["id"])
            if status not in _VERDICTS:
                raise RuntimeError(f"Evidently gave no drift verdict for column {config['column']!r}: {status!r}")
            per_column[config["column"]] = {
                "score": float(metric["value"]),
                "method": config["method"],
                "threshold": float(config["threshold"]),
                "drifted": _VERDICTS[status],
            }
        elif config["type"] == _DRIFTED_COLUMNS_COUNT:
            drifted_share = float(metric["value"]["share"])
            dataset_status = status_by_metric.get(metric["id"])
    if drifted_share is None or dataset_status not in _VERDICTS or set(per_column) != set(columns):
        raise RuntimeError(
            f"unexpected Evidently snapshot: columns {sorted(per_column)} of {sorted(columns)},"
            f" drifted share {drifted_share}, dataset test status {dataset_status!r}"
        )
    return per_column, drifted_share, _VERDICTS[dataset_status]
