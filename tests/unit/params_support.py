"""The pure layers' config objects at params.yaml's defaults, for tests that build them by hand.

Their params-backed fields have no default of their own (flows/settings.py declares each default once), so
a test takes the settings' defaults here and overrides what it is about: `clean_params(DIGITS, workers=1)`.
Objects the stages build through a converter (flows.stage_config, flows.monitor_stage) are built by that
converter from a default `Settings`; the others from the pydantic section, field by field.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from features.task import Task
from flows.settings import LoraParams, Params, Settings, StatePaths, TrainParams
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
    """`train:` at its defaults as flows.model_stages passes it to TrainConfig."""
    from models.train import TrainConfig

    tr = TrainParams()
    return TrainConfig(**{"seed": tr.seed, "batch_size": tr.batch_size, "epochs_stage1": tr.epochs_stage1,
                          "epochs_stage2": tr.epochs_stage2, "lr": tr.lr, "weight_decay": tr.weight_decay,
                          "label_aware": tr.label_aware, "grad_clip": tr.grad_clip, **overrides})


def lora_settings(**overrides: Any):
    """`train.lora:`'s adapter at its defaults as flows.lora_stages passes it to LoraSettings."""
    from models.lora import LoraSettings

    p = LoraParams()
    return LoraSettings(**{"r": p.r, "alpha": p.alpha, "dropout": p.dropout, **overrides})


def classifier_training(**overrides: Any):
    """`train.lora:`'s optimisation at its defaults (and `train.seed`) as flows.lora_stages passes it."""
    from models.lora import ClassifierTraining

    p = LoraParams()
    return ClassifierTraining(**{"steps": p.steps, "batch_size": p.batch_size, "lr": p.lr,
                                 "weight_decay": p.weight_decay, "seed": TrainParams().seed, **overrides})


def evidently_drift_params(**overrides: Any):
    """Drift judged as Evidently alone would: its per-method thresholds, p-values below 1,000 reference rows,
    no numpy fast path, no sampling-noise floor (the params' drift_share and report_rows)."""
    return drift_params(**{"column_threshold": None, "distance_methods": False, "fast_path_rows": None,
                           "noise_sigmas": None, **overrides})
