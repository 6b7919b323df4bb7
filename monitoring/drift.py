"""Drift of tabular features of a current batch against reference data, computed by Evidently.

Evidently picks the method per column: with at most 1,000 *reference* rows it reports
p-values (K-S, chi-square, Z), where small means drift; above that it reports distances
(Wasserstein, Jensen-Shannon), where large means drift. The per-column verdict is therefore
read from Evidently's own drift tests, never re-derived from a score with one fixed direction.
With `DriftParams(distance_methods=True)` every column gets the statistic Evidently's default picks
above 1,000 reference rows (normed Wasserstein, or Jensen-Shannon for categorical and <= 5-valued
columns) whatever the size, so a small batch is judged by the same effect size as a large one, not
by p-values that flag ~5 % of unchanged columns. Above `fast_path_rows` rows the verdicts come from
`monitoring.fast_drift` (the same statistics, exactly, in numpy) and the Evidently snapshot, kept for
the report and the workspace, is computed on a sample of `report_rows` rows.
Pure: no file I/O (see `monitoring.workspace` for saving).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pandas as pd
from evidently import DataDefinition, Dataset, Report
from evidently.presets import DataDriftPreset

from monitoring.fast_drift import MAX_DISCRETE_VALUES, MIN_DISTANCE_ROWS, compute_column_drift_fast

_VALUE_DRIFT = "evidently:metric_v2:ValueDrift"
_DRIFTED_COLUMNS_COUNT = "evidently:metric_v2:DriftedColumnsCount"
_VERDICTS = {"FAIL": True, "SUCCESS": False}  # Evidently's drift tests fail when drift is found


@dataclass(frozen=True)
class DriftParams:
    """When a batch counts as drifted; built once from params.yaml's `monitor:` (defaults and reasons:
    flows/settings.py), where the fields without a default come from."""

    drift_share: float  # dataset drift when at least this share of columns drift
    # None: Evidently's per-method default (0.05 for p-values, 0.1 for distances). A number is
    # applied to whatever method Evidently picks, so it means a p-value below 1,000 reference
    # rows and a distance above.
    column_threshold: float | None
    fast_path_rows: int | None  # at least this many rows on both sides: numpy verdicts (None: never)
    report_rows: int  # rows per side of the Evidently snapshot on the fast path
    # A column's threshold is at least this many x sqrt(1/n_ref + 1/n_cur) (non-null rows): the sampling
    # noise of both distances is of that order, ~0.1 for 300 vs 600 rows, so small batches would flag
    # unchanged columns at 0.1. Above ~2,000 rows per side it is below 0.1 and changes nothing. None: off.
    noise_sigmas: float | None
    distance_methods: bool = False  # Wasserstein / Jensen-Shannon at every size (see the module docstring)
    seed: int = 0  # of that sample

    def __post_init__(self) -> None:
        if not 0.0 < self.drift_share <= 1.0:
            raise ValueError(f"drift_share must be in (0, 1], got {self.drift_share}")
        if self.column_threshold is not None and self.column_threshold <= 0:
            raise ValueError(f"column_threshold must be > 0 or None, got {self.column_threshold}")
        if self.fast_path_rows is not None and self.fast_path_rows < MIN_DISTANCE_ROWS:
            raise ValueError(f"fast_path_rows must be >= {MIN_DISTANCE_ROWS} (distances only), got {self.fast_path_rows}")


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
    not drift here (`monitoring.quality` watches that); a column with no values at all in either
    frame raises ValueError.
    """
    columns = [*numerical, *categorical]
    _check_inputs(reference, current, columns)
    reference_rows, current_rows = len(reference), len(current)
    fast = params.fast_path_rows is not None and min(len(reference), len(current)) >= params.fast_path_rows
    thresholds = _column_thresholds(reference, current, columns, params)
    if fast:
        per_column = compute_column_drift_fast(reference, current, list(numerical), list(categorical),
                                               0.1 if params.column_threshold is None else params.column_threshold)
        for column, entry in per_column.items():  # the noise floor, when on, is below 0.1 at these sizes
            entry["threshold"] = thresholds.get(column, entry["threshold"])
            entry["drifted"] = bool(entry["score"] >= entry["threshold"])
        reference, current = (_sample(frame, params.report_rows, params.seed) for frame in (reference, current))
    methods = distance_methods(reference, current, numerical, categorical) if params.distance_methods or fast else None
    definition = DataDefinition(numerical_columns=list(numerical), categorical_columns=list(categorical))
    preset = DataDriftPreset(columns=columns, drift_share=params.drift_share, threshold=params.column_threshold,
                             per_column_method=methods, per_column_threshold=thresholds or None)
    snapshot = Report([preset], include_tests=True).run(
        # Column subsets are new frames, so Evidently never touches the caller's frames.
        current_data=Dataset.from_pandas(current[columns], data_definition=definition),
        reference_data=Dataset.from_pandas(reference[columns], data_definition=definition),
    )
    # Through JSON, not .dict(): statuses become strings and numpy scalars plain numbers.
    summary = json.loads(snapshot.json())
    report_columns, drifted_share, drift_detected = _read_summary(summary, columns)
    if fast:
        drifted_share = sum(entry["drifted"] for entry in per_column.values()) / len(columns)
        drift_detected = drifted_share >= params.drift_share
    else:
        per_column = report_columns
    return DriftResult(
        drift_detected=drift_detected,
        drifted_share=drifted_share,
        drifted_columns=[column for column in columns if per_column[column]["drifted"]],
        per_column=per_column,
        reference_rows=reference_rows,
        current_rows=current_rows,
        snapshot=snapshot,
    )


def distance_methods(reference: pd.DataFrame, current: pd.DataFrame, numerical: list[str],
                     categorical: list[str]) -> dict[str, str]:
    """Per column, the method Evidently's default picks above 1,000 reference rows."""
    methods = {column: "jensenshannon" for column in categorical}
    for column in numerical:
        distinct = pd.concat([reference[column], current[column]]).nunique()
        methods[column] = "jensenshannon" if distinct <= MAX_DISCRETE_VALUES else "wasserstein"
    return methods


def _column_thresholds(reference: pd.DataFrame, current: pd.DataFrame, columns: list[str],
                       params: DriftParams) -> dict[str, float]:
    if params.noise_sigmas is None:
        return {}
    base = 0.1 if params.column_threshold is None else params.column_threshold
    return {column: max(base, params.noise_sigmas * (1 / reference[column].notna().sum() + 1 / current[column].notna().sum()) ** 0.5)
            for column in columns}


def _sample(frame: pd.DataFrame, rows: int, seed: int) -> pd.DataFrame:
    return frame if len(frame) <= rows else frame.sample(rows, random_state=seed)


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
