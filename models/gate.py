"""The gate: may the challenger replace the champion? Pure decision logic, explained check by check.

Both models are scored on the same golden rows. Per metric (and per slice of the golden set: a
class, a value of one of the task's slice fields) the policy may set
- value bounds (`min`, `max`): always checked, also for the first model; budgets such as p95
  latency and model size are `max` bounds;
- change bounds against the champion (`max_drop` absolute, `max_drop_rel` relative), which allow
  a small configured regression. "Worse" follows the metric's direction, which the model family
  that computes the metric declares (`models/families.py`: lower latency is better), never a
  threshold entry: a budget written without a direction is still judged the right way round.
  For metrics with per-row scores (accuracies) a change passes only when the lower end of its
  paired-bootstrap interval is above `-max_drop`: an observed gain that may be noise does not count.
  Measured metrics without per-row values (latency, size) compare point values.
A threshold on a metric of a modality the task's data lacks (an audio metric for an image + text
task) is reported as a `not_applicable` check that names why: it neither fails nor disappears.
The challenger passes only if every check passes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

import numpy as np

from models.bootstrap import BootstrapConfig, draw_resample_weights, paired_change


@dataclass(frozen=True)
class MetricThreshold:
    min: float | None = None  # the metric must be at least this
    max: float | None = None  # the metric must be at most this (a budget for latency, size)
    max_drop: float | None = None  # allowed worsening against the champion, in the metric's units
    max_drop_rel: float | None = None  # allowed worsening as a share of the champion's value (0.1 = 10 %)

    def __post_init__(self) -> None:
        for name in ("max_drop", "max_drop_rel"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name} is an allowed regression and must be >= 0, got {value}")


HIGHER, LOWER = "higher", "lower"  # which way a metric is better
NOT_APPLICABLE = "not_applicable"  # the kind of a check whose metric the task's data cannot have
DIRECTIONS = (HIGHER, LOWER)


@dataclass(frozen=True)
class GatePolicy:
    thresholds: dict[str, MetricThreshold]  # headline metric → threshold
    slices: dict[str, dict[str, MetricThreshold]] = field(default_factory=dict)  # group → per-row metric → threshold
    # params.yaml gate.min_slice_rows and gate.bootstrap (defaults declared once, in flows/settings.py)
    min_slice_rows: int = field(kw_only=True)  # smaller slices are reported as skipped: their interval says nothing
    bootstrap: BootstrapConfig = field(kw_only=True)
    # metric → HIGHER or LOWER is better, from the family that computes it; every judged metric needs one,
    # since guessing "higher" turns a latency budget upside down (a faster challenger would fail).
    directions: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        judged = set(self.thresholds) | {m for metrics in self.slices.values() for m in metrics}
        for metric in sorted(judged):
            direction = self.directions.get(metric)
            if direction not in DIRECTIONS:
                raise ValueError(f"gate metric {metric!r} has no direction ({direction!r}); each judged metric needs "
                                 f"one of {list(DIRECTIONS)}; declared: {dict(self.directions)}")

    def higher_is_better(self, metric: str) -> bool:
        return self.directions[metric] == HIGHER


@dataclass(frozen=True)
class ModelScores:
    """One model on the golden set."""

    per_row: dict[str, np.ndarray]  # metric → (N,) per-row score (1.0 right, 0.0 wrong); the metric is its mean
    measured: dict[str, float] = field(default_factory=dict)  # no per-row values: p95 latency, model size
    # metric → why it was not measured and cannot be: its modality is not in the golden set
    not_applicable: dict[str, str] = field(default_factory=dict)

    def metrics(self) -> dict[str, float]:
        return {**{k: float(np.mean(v)) for k, v in self.per_row.items()}, **self.measured}


@dataclass(frozen=True)
class Check:
    metric: str
    # "min" or "max" (value), "change" (absolute) or "change_rel" (relative) against the champion,
    # or NOT_APPLICABLE (the metric's modality is not in the task's data; observed and bound are NaN)
    kind: str
    observed: float  # value checks: the challenger's value; change checks: the improvement (negative: worse)
    bound: float  # value checks: the bound; change checks: -max_drop or -max_drop_rel
    passed: bool
    interval: tuple[float, float] | None = None  # bootstrap interval of the improvement; None for point values
    # "<field>=<value>" ("class=3": class index 3); None for the whole golden set; a not_applicable
    # slice check names the field alone
    slice: str | None = None
    champion: float | None = None  # the champion's value, for change checks
    detail: str = ""  # why a check does not apply

    @property
    def name(self) -> str:
        return f"{self.metric}[{self.slice}] {self.kind}" if self.slice else f"{self.metric} {self.kind}"

    def explain(self) -> str:
        if self.kind == NOT_APPLICABLE:
            return f"{self.name.removesuffix(' ' + NOT_APPLICABLE)}: not applicable ({self.detail})"
        interval = f" (CI {self.interval[0]:+.4f}..{self.interval[1]:+.4f})" if self.interval else ""
        sign = "+" if self.kind.startswith("change") else ""
        return f"{self.name}: {self.observed:{sign}.4f}{interval} vs bound {self.bound:{sign}.4f}"


@dataclass
class GateDecision:
    passed: bool
    checks: list[Check]
    challenger: dict[str, float]
    champion: dict[str, float] | None
    reason: str = ""
    lineage: dict[str, Any] = field(default_factory=dict)
    skipped_slices: list[str] = field(default_factory=list)  # slices under min_slice_rows golden rows
    # judged slice → per-row metric → the challenger's value on its golden rows (the model card's table;
    # a slice bounded only by a change check has no value check to read it from)
    slice_metrics: dict[str, dict[str, float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def failed_checks(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]


def _value_checks(metric: str, value: float, t: MetricThreshold, slice_: str | None) -> list[Check]:
    checks = []
    if t.min is not None:
        checks.append(Check(metric, "min", value, t.min, bool(value >= t.min), slice=slice_))
    if t.max is not None:
        checks.append(Check(metric, "max", value, t.max, bool(value <= t.max), slice=slice_))
    return checks


def _not_applicable(metric: str, why: str, group: str | None) -> Check:
    return Check(metric, NOT_APPLICABLE, float("nan"), float("nan"), True, slice=group, detail=why)


def _change_checks(metric: str, t: MetricThreshold, higher_is_better: bool, challenger: ModelScores,
                   champion: ModelScores, weights: np.ndarray | None, confidence: float, rows: np.ndarray | None,
                   slice_: str | None) -> list[Check]:
    """Improvement = ±(challenger − champion), signed so that positive is better; passes when its
    interval's lower end (or the point value, without per-row scores) is at least -max_drop."""
    sign = 1.0 if higher_is_better else -1.0
    if metric in challenger.per_row and metric in champion.per_row:
        assert weights is not None
        pc = paired_change(challenger.per_row[metric], champion.per_row[metric], weights, confidence, rows)
        ends = sorted((sign * pc.low, sign * pc.high))
        rel_ends = sorted((sign * pc.rel_low, sign * pc.rel_high))
        absolute = (sign * pc.change, (ends[0], ends[1]), pc.champion)
        relative = (sign * pc.rel_change, (rel_ends[0], rel_ends[1]))
    elif metric in champion.measured:
        chal, champ = challenger.metrics()[metric], champion.measured[metric]
        absolute = (sign * (chal - champ), None, champ)
        relative = (sign * (chal - champ) / abs(champ) if champ else float("nan"), None)
    else:
        return []  # the champion was never measured on this metric (an older gate): nothing to compare
    checks = []
    improvement, interval, champ_value = absolute
    if t.max_drop is not None:
        lower = interval[0] if interval else improvement
        checks.append(Check(metric, "change", improvement, -t.max_drop, bool(lower >= -t.max_drop), interval,
                            slice_, champ_value))
    rel, rel_interval = relative
    if t.max_drop_rel is not None and np.isfinite(rel):  # undefined against a champion scoring 0
        lower = rel_interval[0] if rel_interval and np.isfinite(rel_interval[0]) else rel
        checks.append(Check(metric, "change_rel", rel, -t.max_drop_rel, bool(lower >= -t.max_drop_rel), rel_interval,
                            slice_, champ_value))
    return checks


def _validate(challenger: ModelScores, champion: ModelScores | None, policy: GatePolicy,
              groups: dict[str, np.ndarray]) -> None:
    if not policy.thresholds:
        raise ValueError("the gate needs at least one metric threshold (params.yaml: gate.thresholds)")
    evaluated = challenger.metrics()
    for metric in policy.thresholds:
        if metric not in evaluated and metric not in challenger.not_applicable:
            raise ValueError(f"gate metric {metric!r} was not evaluated; evaluated: {sorted(evaluated)}")
    n_rows = {len(v) for v in challenger.per_row.values()}
    if champion is not None:
        n_rows |= {len(v) for v in champion.per_row.values()}
    if len(n_rows) > 1:
        raise ValueError(f"per-row scores cover different numbers of golden rows {sorted(n_rows)}: not the same golden set")
    for group, metrics in policy.slices.items():
        if group not in groups:
            raise ValueError(f"slice group {group!r} is not a column of the golden set; available: {sorted(groups)}")
        if len(groups[group]) not in n_rows:
            raise ValueError(f"slice group {group!r} has {len(groups[group])} rows, the scores {sorted(n_rows)}")
        for metric in metrics:
            if metric not in challenger.per_row and metric not in challenger.not_applicable:
                raise ValueError(f"slice metric {metric!r} needs per-row scores; those exist for {sorted(challenger.per_row)}")


def decide(challenger: ModelScores, champion: ModelScores | None, policy: GatePolicy,
           groups: dict[str, np.ndarray] | None = None) -> GateDecision:
    """Every threshold becomes one or more checks; the challenger passes only if all pass.

    `groups` labels each golden row for the slice checks: {"class": class indices, field: values, ...}.
    Without a champion only value bounds apply (the first deployment).
    """
    groups = groups or {}
    _validate(challenger, champion, policy, groups)
    n_rows = len(next(iter(challenger.per_row.values()))) if challenger.per_row else 0
    weights = draw_resample_weights(n_rows, policy.bootstrap) if champion is not None and n_rows else None
    confidence = policy.bootstrap.confidence
    values = challenger.metrics()
    checks: list[Check] = []
    for metric, threshold in policy.thresholds.items():
        if metric not in values:  # _validate let it through: the task has no such modality
            checks.append(_not_applicable(metric, challenger.not_applicable[metric], None))
            continue
        checks += _value_checks(metric, values[metric], threshold, None)
        if champion is not None:
            checks += _change_checks(metric, threshold, policy.higher_is_better(metric), challenger, champion,
                                     weights, confidence, None, None)
    skipped: list[str] = []
    slice_metrics: dict[str, dict[str, float]] = {}
    for group, metrics in policy.slices.items():
        checks += [_not_applicable(m, challenger.not_applicable[m], group) for m in metrics if m not in challenger.per_row]
        metrics = {m: t for m, t in metrics.items() if m in challenger.per_row}
        if not metrics:
            continue
        column = np.asarray(groups[group])
        for key in sorted(set(column.tolist()), key=str):
            rows = column == key
            slice_ = f"{group}={key}"
            if rows.sum() < policy.min_slice_rows:
                skipped.append(f"{slice_} ({int(rows.sum())} rows)")
                continue
            for metric, threshold in metrics.items():
                value = float(np.mean(challenger.per_row[metric][rows]))
                slice_metrics.setdefault(slice_, {})[metric] = value
                checks += _value_checks(metric, value, threshold, slice_)
                if champion is not None:
                    checks += _change_checks(metric, threshold, policy.higher_is_better(metric), challenger,
                                             champion, weights, confidence, rows, slice_)
    failed = [c for c in checks if not c.passed]
    if failed:
        reason = "; ".join(c.explain() for c in failed)
    else:
        reason = "all checks passed" + ("" if champion is not None else " (first model: value thresholds only)")
    not_applicable = [c.explain() for c in checks if c.kind == NOT_APPLICABLE]
    if not_applicable:
        reason += "; " + "; ".join(not_applicable)
    return GateDecision(not failed, checks, values, champion.metrics() if champion is not None else None, reason,
                        skipped_slices=sorted(set(skipped)), slice_metrics=slice_metrics)
