"""The gate: may the challenger replace the champion? Pure decision logic, explained check by check.

Value bounds always apply; change checks apply once there is a champion and allow at
most `max_drop` of regression per metric (a small, configured tolerance, not "any").
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class MetricThreshold:
    min: float | None = None  # the metric must be at least this
    max: float | None = None  # the metric must be at most this
    max_drop: float | None = None  # challenger >= champion - max_drop


@dataclass(frozen=True)
class Check:
    metric: str
    kind: str  # "min", "max" or "change"
    observed: float
    bound: float
    passed: bool


@dataclass
class GateDecision:
    passed: bool
    checks: list[Check]
    challenger: dict[str, float]
    champion: dict[str, float] | None
    reason: str = ""
    lineage: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def failed_checks(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]


def decide(
    challenger: dict[str, float], champion: dict[str, float] | None, thresholds: dict[str, MetricThreshold]
) -> GateDecision:
    """Every threshold becomes one or more checks; the challenger passes only if all pass."""
    if not thresholds:
        raise ValueError("the gate needs at least one metric threshold (params.yaml: gate.thresholds)")
    checks: list[Check] = []
    for metric, threshold in thresholds.items():
        if metric not in challenger:
            raise ValueError(f"gate metric {metric!r} was not evaluated; evaluated: {sorted(challenger)}")
        value = float(challenger[metric])
        if threshold.min is not None:
            checks.append(Check(metric, "min", value, threshold.min, value >= threshold.min))
        if threshold.max is not None:
            checks.append(Check(metric, "max", value, threshold.max, value <= threshold.max))
        if champion is not None and threshold.max_drop is not None and metric in champion:
            bound = float(champion[metric]) - threshold.max_drop
            checks.append(Check(metric, "change", value, bound, value >= bound))
    failed = [c for c in checks if not c.passed]
    reason = (
        "all checks passed" + ("" if champion is not None else " (first model: value thresholds only)")
        if not failed
        else "; ".join(f"{c.metric} {c.kind}: {c.observed:.4f} vs bound {c.bound:.4f}" for c in failed)
    )
    return GateDecision(not failed, checks, dict(challenger), dict(champion) if champion else None, reason)
