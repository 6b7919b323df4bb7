"""The pure layers' config objects at params.yaml's defaults, for tests that build them by hand.

Their params-backed fields have no default of their own (flows/settings.py declares each default once), so
a test takes the settings' defaults here and overrides what it is about: `clean_params(DIGITS, workers=1)`.
Each is built by the converter the stages use (flows.stage_config, flows.monitor_stage) from the default
settings, so a test's object differs from a run's only in what the test overrides.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from features.task import Task
from flows.settings import CleanParams, LoraParams, Params, Settings, StatePaths, TrainParams
from tests.unit.task_support import DIGITS


def default_settings(task: Task = DIGITS) -> Settings:
    """Settings with every params.yaml section at its default, for `task` (no file read)."""
    params = Params.model_validate({"task": {"classes": list(task.classes), "prompts": "{label}"}})
    return Settings(params=params, paths=StatePaths(Path(".flywheel-unused")), task=task, tracking_uri="")


def clean_params(task: Task = DIGITS, **overrides: Any):
    from flows.stage_config import clean_params as build

    return replace(build(default_settings(task)), **overrides)


def validate_params(n_classes: int = 10, languages: tuple[str, ...] | None = None, **overrides: Any):
    from flows.stage_config import validate_params as build

    return replace(build(default_settings()), n_classes=n_classes, languages=languages, **overrides)


def label_params(**overrides: Any):
    from flows.stage_config import label_params as build

    return replace(build(default_settings()), **overrides)


def label_model_params(**overrides: Any):
    return replace(label_params().model, **overrides)


def input_spec(**overrides: Any):
    from flows.stage_config import input_spec as build

    return replace(build(default_settings()), **overrides)


def check_params():
    from flows.monitor_stage import check_params as build

    return build(default_settings())


def drift_params(**overrides: Any):
    return replace(check_params().drift, **overrides)


def model_drift_params(**overrides: Any):
    return replace(check_params().model, **overrides)


def quality_params(**overrides: Any):
    return replace(check_params().quality, **overrides)


def train_config(**overrides: Any):
    from flows.stage_config import train_config as build

    return replace(build(TrainParams(), CleanParams().sample_rate), **overrides)


def lora_settings(**overrides: Any):
    """`train.lora:`'s adapter at its defaults."""
    from flows.stage_config import lora_settings as build

    return replace(build(LoraParams()), **overrides)


def classifier_training(**overrides: Any):
    """`train.lora:`'s optimisation at its defaults, seeded by `train.seed`'s."""
    from flows.stage_config import classifier_training as build

    return replace(build(LoraParams(), TrainParams().seed), **overrides)


def evidently_drift_params(**overrides: Any):
    """Drift judged as Evidently alone would: its per-method thresholds, p-values below 1,000 reference rows,
    no numpy fast path, no sampling-noise floor (the params' drift_share and report_rows)."""
    return drift_params(**{"column_threshold": None, "distance_methods": False, "fast_path_rows": None,
                           "noise_sigmas": None, **overrides})


def bootstrap_config(**overrides: Any):
    """The gate's bootstrap at params.yaml's defaults (gate.bootstrap)."""
    from models.bootstrap import BootstrapConfig

    return BootstrapConfig(**{**Params.model_fields["gate"].default.bootstrap.model_dump(), **overrides})


def policy_at_defaults(*args: Any, **kwargs: Any):
    """models.gate.GatePolicy with gate.min_slice_rows and gate.bootstrap at params.yaml's defaults unless given."""
    from models.gate import GatePolicy

    defaults = {"min_slice_rows": Params.model_fields["gate"].default.min_slice_rows, "bootstrap": bootstrap_config()}
    return GatePolicy(*args, **{**defaults, **kwargs})
