"""params.yaml `gate:`: the thresholds each family is judged by, the bootstrap of a change's interval, slice sizes."""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

from flows.params_base import _Strict
from models.family import ModelFamily, load_family


class Threshold(_Strict):
    min: float | None = None  # value bound: the metric must be at least this
    max: float | None = None  # value bound (a budget for latency and size): at most this
    max_drop: float | None = Field(None, ge=0)  # allowed regression against the champion, in the metric's units
    max_drop_rel: float | None = Field(None, ge=0)  # allowed regression as a share of the champion's value

    @model_validator(mode="before")
    @classmethod
    def _no_direction(cls, raw: Any) -> Any:
        if isinstance(raw, dict) and "higher_is_better" in raw:
            raise ValueError("higher_is_better is not a threshold setting: which way a metric is better is declared "
                             "once by the model family that computes it (its metric_directions()); "
                             "remove it from the threshold")
        return raw


class BootstrapParams(_Strict):
    resamples: int = Field(1000, ge=100)  # paired resamples of the golden set
    confidence: float = Field(0.9, ge=0.5, lt=1)  # two-sided interval; a change passes if its lower end >= -max_drop
    seed: int = 0  # the resamples' seed: the same decision can be recomputed exactly


class FamilyGate(_Strict):
    """One family's gate: `gate.families.<family name>`."""

    thresholds: dict[str, Threshold] = Field(default_factory=dict)  # metric -> bounds; the gate needs at least one
    slices: dict[str, dict[str, Threshold]] = Field(default_factory=dict)  # "class" or a task.slices field


def check_family_metrics(where: str, family: ModelFamily, gate: FamilyGate) -> None:
    """Every gated metric must be one the family computes: a misspelt name would never be judged."""
    known = family.metric_directions()
    named = [(f"{where}.thresholds", m) for m in gate.thresholds]
    named += [(f"{where}.slices.{group}", m) for group, metrics in gate.slices.items() for m in metrics]
    for entry, metric in named:
        if metric not in known:
            raise ValueError(f"{entry}: {metric!r} is not a metric of the {family.name} family; it computes {sorted(known)}")


class GateParams(_Strict):
    latency_items: int = Field(50, ge=1)  # golden items timed one by one per model for p95 latency
    bootstrap: BootstrapParams = BootstrapParams()  # the paired bootstrap of a change's interval
    min_slice_rows: int = Field(5, ge=1)  # slices with fewer golden rows are reported, not judged
    families: dict[str, FamilyGate] = Field(default_factory=dict)  # family name -> its thresholds and slices

    @model_validator(mode="before")
    @classmethod
    def _moved_keys(cls, raw: Any) -> Any:
        if isinstance(raw, dict):
            moved = {"thresholds": "gate.families.imagebind.thresholds (each family has its own)",
                     "slices": "gate.families.imagebind.slices (each family has its own)",
                     "lora": "gate.families.lora (thresholds and slices)"}
            old = [key for key in moved if key in raw]
            if old:
                raise ValueError("; ".join(f"gate.{key} moved to {moved[key]}" for key in old))
        return raw

    @model_validator(mode="after")
    def _metrics_of_their_family(self) -> "GateParams":
        for name, gate in self.families.items():
            try:
                family = load_family(name)
            except ValueError:
                continue  # a family not installed here (or named by import path): checked as train.family
            check_family_metrics(f"gate.families.{name}", family, gate)
        return self
