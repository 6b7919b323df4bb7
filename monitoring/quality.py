"""Data quality (missing and out-of-range shares) and performance drift (accuracy on delayed labels).

Quality: per feature, the current share of missing values against the reference's, and the share
of current values outside the reference's [min, max]. An unchanged batch has ~2/(reference rows)
of its values outside that range, so a share of a few percent is a changed source (a microphone
that clips, a scanner that blurs), not sampling noise.
Performance: the champion's accuracy on rows whose (human) label has arrived, current against the
reference window; drift when the drop is at least `max_accuracy_drop` and a one-sided
two-proportion z-test says it is not noise (p below `accuracy_p_value`). Pure.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import norm


@dataclass(frozen=True)
class QualityParams:
    """params.yaml's `monitor:` data quality and performance bounds (defaults and reasons: flows/settings.py)."""

    max_missing_increase: float  # extra share of missing values allowed per feature
    max_out_of_range_share: float  # share of values outside the reference's [min, max]
    max_accuracy_drop: float  # absolute accuracy drop that counts as performance drift ...
    accuracy_p_value: float  # ... when also significant at this level
    min_labelled_rows: int  # fewer labelled current rows: performance is not judged

    def __post_init__(self) -> None:
        for name in ("max_missing_increase", "max_out_of_range_share", "max_accuracy_drop", "accuracy_p_value"):
            if not 0 < getattr(self, name) < 1:
                raise ValueError(f"{name} must be in (0, 1), got {getattr(self, name)}")


def compute_quality(reference: pd.DataFrame, current: pd.DataFrame, numerical: list[str], categorical: list[str],
                    params: QualityParams) -> dict[str, dict[str, Any]]:
    """Per feature {"missing_share", "reference_missing_share", "out_of_range_share", "drifted", "reasons"}."""
    if current.empty:
        raise ValueError("the current frame is empty; quality needs rows")
    result: dict[str, dict[str, Any]] = {}
    for column in [*numerical, *categorical]:
        ref_missing = float(reference[column].isna().mean()) if len(reference) else 0.0
        missing = float(current[column].isna().mean())
        reasons = []
        if missing - ref_missing > params.max_missing_increase:
            reasons.append("missing")
        entry: dict[str, Any] = {"missing_share": round(missing, 4), "reference_missing_share": round(ref_missing, 4)}
        if column in numerical:
            ref_values = pd.to_numeric(reference[column], errors="coerce").dropna()
            values = pd.to_numeric(current[column], errors="coerce").dropna()
            outside = float(((values < ref_values.min()) | (values > ref_values.max())).mean()) if len(values) and len(ref_values) else 0.0
            entry["out_of_range_share"] = round(outside, 4)
            if outside > params.max_out_of_range_share:
                reasons.append("out_of_range")
        result[column] = {**entry, "drifted": bool(reasons), "reasons": reasons}
    return result


def compute_performance(reference_correct: np.ndarray, current_correct: np.ndarray, params: QualityParams) -> dict[str, Any]:
    """Accuracy drift from per-row correctness (1/0) of labelled reference and current rows."""
    n_ref, n_cur = len(reference_correct), len(current_correct)
    entry: dict[str, Any] = {"reference_rows": n_ref, "current_rows": n_cur}
    if n_cur < params.min_labelled_rows or n_ref < params.min_labelled_rows:
        return {**entry, "judged": False, "drifted": False,
                "detail": f"needs >= {params.min_labelled_rows} labelled rows on each side"}
    ref_acc, cur_acc = float(np.mean(reference_correct)), float(np.mean(current_correct))
    pooled = (ref_acc * n_ref + cur_acc * n_cur) / (n_ref + n_cur)
    spread = math.sqrt(max(pooled * (1 - pooled), 1e-12) * (1 / n_ref + 1 / n_cur))
    p_value = float(norm.sf((ref_acc - cur_acc) / spread))
    drop = ref_acc - cur_acc
    return {**entry, "judged": True, "reference_accuracy": round(ref_acc, 4), "current_accuracy": round(cur_acc, 4),
            "drop": round(drop, 4), "p_value": p_value,
            "drifted": bool(drop >= params.max_accuracy_drop and p_value < params.accuracy_p_value)}
