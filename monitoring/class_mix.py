"""The class mix of the champion's predictions, by class name: per-class shares for the run summary, and
the classes that moved most for alerts and tables.

Inside the lifecycle a class is its index; here, at the edge where people read the result, each index
becomes its name in the task's `classes` (passed in, never read from params). Pure, and light to import
(no Evidently): alerts and the CLI read it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


def name_classes(predicted: np.ndarray, classes: Sequence[str]) -> np.ndarray:
    """(N,) class indices → (N,) class names."""
    return np.asarray(classes, dtype=object)[_class_indices(predicted, classes)]


def compute_class_mix(reference: np.ndarray, current: np.ndarray, classes: Sequence[str]) -> dict[str, dict[str, float]]:
    """Per class name, in the task's order, its share of the reference and of the current predictions."""
    shares = [np.bincount(indices, minlength=len(classes)) / max(len(indices), 1)
              for indices in (_class_indices(reference, classes), _class_indices(current, classes))]
    return {name: {"reference": round(float(shares[0][k]), 6), "current": round(float(shares[1][k]), 6)}
            for k, name in enumerate(classes)}


def _class_indices(predicted: np.ndarray, classes: Sequence[str]) -> np.ndarray:
    """The predictions as int64 indices; one outside the task's classes raises, naming it."""
    indices = np.asarray(predicted, dtype=np.int64)
    outside = sorted({int(k) for k in indices[(indices < 0) | (indices >= len(classes))]})
    if outside:
        raise ValueError(f"predicted classes {outside[:10]} are not indices of the task's {len(classes)} classes; "
                         "was the champion trained for another task?")
    return indices


def largest_moves(class_mix: Mapping[str, Mapping[str, float]], top: int = 3) -> list[str]:
    """The `top` classes whose share moved most, as "name 12% → 31%" (largest change first)."""
    moved = sorted(class_mix.items(), key=lambda item: -abs(item[1]["current"] - item[1]["reference"]))
    return [f"{name} {mix['reference']:.0%} → {mix['current']:.0%}" for name, mix in moved[:top]
            if mix["current"] != mix["reference"]]


def describe_class_moves(checks: Mapping[str, Any]) -> dict[str, str]:
    """Per drifted prediction finding of a monitor summary's `checks` ("prediction_drift:image"), the classes
    whose share moved most, by name ("circle 33% → 61%, triangle 34% → 10%"); findings without a class mix
    (checks run without class names) are left out."""
    items = checks.get("prediction_drift", {}).get("items", {})
    moves = {f"prediction_drift:{modality}": ", ".join(largest_moves(entry["class_mix"]))
             for modality, entry in items.items() if entry.get("drifted") and entry.get("class_mix")}
    return {finding: text for finding, text in moves.items() if text}
