"""Each default is declared once (flows/settings.py), and what is written about the defaults equals it:
`flywheel params --defaults`, docs/reference/defaults.md, `flywheel init`'s params.yaml, the digits example's
params.yaml and the pure layers' config objects the stages build from the settings."""

from __future__ import annotations

from dataclasses import MISSING, fields
from typing import Any

import pytest
import yaml
from pydantic import BaseModel
from typer.testing import CliRunner

from flows.cli import app
from flows.params_text import SECTION_NOTES, field_comments, render_defaults_page
from flows.scaffold import STARTING_GATE_THRESHOLDS, build_params_text
from flows.settings import ImageBindLoraParams, LoraParams, Params, TrainParams, load_params
from tests.conftest import PROJECT
from tests.unit.params_support import default_settings

runner = CliRunner()
TASK = {"classes": ["cat", "dog"], "prompts": "a photo of a {label}"}
EXAMPLE = PROJECT / "examples" / "digits" / "params.yaml"

# Entries the digits example writes although they equal the default, and why.
INTENTIONALLY_EXPLICIT = {
    "registry.model_name": "null, with the comment on how champions are named per family",
    "demo.golden_samples": "dvc.yaml's golden stage names it: a params dependency must be in the file",
    "demo.golden_seed": "dvc.yaml's golden stage names it",
    "train.family": "which family the example trains, beside the other one's name",
    **{f"train.{key}": "an experiment's knob: `dvc exp run -S` sets only keys the file holds"
       for key in ("lr", "batch_size", "epochs_stage1", "epochs_stage2")},
    "alerts.sinks": "the commented sinks above it show how to fill it in",
}
# Entries without a comment of their own in flows/settings.py: the gate's models are the gate work's.
UNCOMMENTED: set[str] = set()


def leaves(values: Any, path: str = "") -> dict[str, Any]:
    """Dotted path -> value for every entry that is not a mapping (an empty mapping is a value)."""
    if isinstance(values, dict) and values:
        return {k: v for key, sub in values.items() for k, v in leaves(sub, f"{path}.{key}" if path else key).items()}
    return {path: values}


def model_entries(model: type[BaseModel], path: str = "") -> list[str]:
    """Dotted path of every field of a settings model, nested models included."""
    out = []
    for name, field in model.model_fields.items():
        key = f"{path}{field.alias or name}"
        out.append(key)
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            out += model_entries(field.annotation, key + ".")
    return out


def test_every_default_flywheel_params_writes_parses_back_to_exactly_the_code_defaults():
    result = runner.invoke(app, ["params", "--defaults"])
    assert result.exit_code == 0, result.output
    written = yaml.safe_load(result.output)
    assert "task" not in written, "the task has no defaults"
    defaults = Params.model_validate({"task": TASK})
    assert Params.model_validate({"task": TASK, **written}) == defaults
    # value by value too: a value parsed back to another type (a quoted number, a date-like string) shows here
    expected = defaults.model_dump(mode="json", by_alias=True, exclude={"task"})
    expected["registry"]["model_name"] = None  # resolved to flywheel-<family> only once a file is read
    assert leaves(written) == leaves(expected)


def test_flywheel_params_shows_the_example_s_effective_values_over_the_defaults():
    result = runner.invoke(app, ["params", "--params", str(EXAMPLE)])
    assert result.exit_code == 0, result.output
    shown = Params.model_validate(yaml.safe_load(result.output))
    assert shown == load_params(EXAMPLE)
    assert "monitor:" in result.output and "noise_sigmas: 3.5" in result.output  # set nowhere in the file, shown


def test_every_entry_has_its_reason_beside_it():
    sections = {field.alias or name for name, field in Params.model_fields.items()}
    assert sections <= set(SECTION_NOTES)
    entries = [e for e in model_entries(Params) if "." in e]
    missing = []
    for entry in entries:
        *parents, name = entry.split(".")
        model: type[BaseModel] = Params
        for parent in parents:
            model = next(f.annotation for n, f in model.model_fields.items() if (f.alias or n) == parent)
        field_name = next(n for n, f in model.model_fields.items() if (f.alias or n) == name)
        if field_name not in field_comments(model) and entry not in UNCOMMENTED:
            missing.append(entry)
    assert not missing, f"entries of flows/settings.py without a comment saying why: {missing}"


def test_the_defaults_page_is_current():
    page = PROJECT / "docs" / "reference" / "defaults.md"
    assert page.read_text() == render_defaults_page(), (
        "docs/reference/defaults.md is out of date: python -m flows.params_text > docs/reference/defaults.md")


def test_the_example_restates_no_default_but_the_intentional_ones():
    raw = yaml.safe_load(EXAMPLE.read_text())
    defaults = leaves(Params.model_validate({"task": raw["task"]}).model_dump(mode="json", by_alias=True))
    defaults["registry.model_name"] = None  # what the file would have to write to restate it
    restated = sorted(path for path, value in leaves({k: v for k, v in raw.items() if k != "task"}).items()
                      if path in defaults and defaults[path] == value and path not in INTENTIONALLY_EXPLICIT)
    assert not restated, f"examples/digits/params.yaml restates defaults {restated}; remove them (or say why above)"


def test_every_params_entry_dvc_yaml_names_is_in_the_example():
    """DVC refuses a params dependency missing from the file, so trimming the example must keep them."""
    dvc = yaml.safe_load((PROJECT / "dvc.yaml").read_text())
    named = {p for stage in dvc["stages"].values() for p in (stage.get("do", stage).get("params") or [])}
    raw = yaml.safe_load(EXAMPLE.read_text())
    present = {".".join(path.split(".")[:depth]) for path in leaves(raw) for depth in range(1, path.count(".") + 2)}
    assert named and not named - present, f"dvc.yaml names params missing from the example: {sorted(named - present)}"


def test_flywheel_init_writes_the_task_to_fill_in_and_the_gate_s_thresholds_and_no_default():
    assert yaml.safe_load(build_params_text()) == {"gate": {"families": {"imagebind": {"thresholds": STARTING_GATE_THRESHOLDS}}}}


def _section_values(section: BaseModel, renamed: dict[str, str] | None = None) -> dict[str, Any]:
    renamed = renamed or {}
    return {renamed.get(name, name): value for name, value in section}


def assert_carries(config: Any, section: BaseModel, renamed: dict[str, str] | None = None) -> None:
    """Every field of `config` that the section declares holds the section's value."""
    values = _section_values(section, renamed)
    shared = [f.name for f in fields(config) if f.name in values]
    assert shared, f"{type(config).__name__} shares no field with {type(section).__name__}"
    for nested in [n for n in shared if isinstance(values[n], BaseModel)]:  # a section of its own: field by field
        assert_carries(getattr(config, nested), values[nested])
    wrong = {n: (getattr(config, n), values[n]) for n in shared if not isinstance(values[n], BaseModel)
             and getattr(config, n) != (tuple(values[n]) if isinstance(values[n], list) else values[n])}
    assert not wrong, f"{type(config).__name__} (built, settings): {wrong}"


def test_the_stages_config_objects_carry_the_settings_values():
    from flows import monitor_stage, stage_config

    settings = default_settings()
    p = settings.params
    assert_carries(stage_config.clean_params(settings), p.clean)
    assert_carries(stage_config.validate_params(settings), p.validate_)
    label = stage_config.label_params(settings)
    assert_carries(label, p.label)
    assert_carries(label.model, p.label)
    assert_carries(stage_config.input_spec(settings), p.transform)
    assert_carries(stage_config.train_config(p.train, p.clean.sample_rate), p.train)
    assert_carries(stage_config.lora_settings(p.train.lora), p.train.lora)
    assert_carries(stage_config.lora_settings(p.train.imagebind_lora), p.train.imagebind_lora)
    assert_carries(stage_config.classifier_training(p.train.lora, p.train.seed), p.train.lora)
    checks = monitor_stage.check_params(settings)
    assert_carries(checks.drift, p.monitor, {"feature_threshold": "column_threshold"})
    assert_carries(checks.model, p.monitor)
    assert_carries(checks.quality, p.monitor)


def _still_defaulted() -> list[tuple[type, str, Any]]:
    """(dataclass, field, the settings' default) for each field that keeps a default of its own although
    params.yaml sets it: a default re-declared there, so it must not drift from flows/settings.py."""
    from models.imagebind import ImageBindConfig
    from models.lora import LoraSettings

    defaults = Params.model_validate({"task": TASK})
    return [
        (LoraSettings, "train_heads", ImageBindLoraParams().train_heads),  # the lora family's head always trains
        (ImageBindConfig, "embed_dim", TrainParams().embed_dim),
        (ImageBindConfig, "audio_cmvn", TrainParams().audio_augment.cmvn),  # default off: older models load unchanged
        (ImageBindConfig, "image_size", defaults.transform.image_size),
        (ImageBindConfig, "audio_n_mels", defaults.transform.n_mels),
        (ImageBindConfig, "audio_frames", defaults.transform.audio_frames),
    ]


@pytest.mark.parametrize("config, name, setting", _still_defaulted(), ids=lambda v: getattr(v, "__name__", str(v)))
def test_a_default_a_pure_layer_still_declares_equals_the_settings_one(config, name, setting):
    (field,) = [f for f in fields(config) if f.name == name]
    declared = field.default if field.default is not MISSING else field.default_factory()  # type: ignore[misc]
    assert declared == setting, f"{config.__name__}.{name} defaults to {declared}, flows/settings.py to {setting}"


def test_the_params_backed_fields_of_the_pure_layers_have_no_default_of_their_own():
    """Leaving out a params value is an error, not a silently different number."""
    from features.clean import CleanParams
    from features.expectations import ValidateParams
    from features.label import LabelParams
    from features.label_model import LabelModelParams
    from models.audio_augment import AudioAugment
    from models.bootstrap import BootstrapConfig
    from models.gate import GatePolicy
    from models.inputs import InputSpec
    from models.lora import ClassifierTraining
    from models.train import TrainConfig
    from monitoring.drift import DriftParams
    from monitoring.model_drift import ModelDriftParams
    from monitoring.quality import QualityParams

    declared_by_settings = {entry.split(".")[-1] for entry in model_entries(Params)} | {"column_threshold"}
    own_seeds = {DriftParams, ModelDriftParams}  # the seed of their row samples, which params.yaml does not set
    defaulted = {}
    for config in (CleanParams, ValidateParams, LabelParams, LabelModelParams, InputSpec, ClassifierTraining,
                   TrainConfig, AudioAugment, DriftParams, ModelDriftParams, QualityParams, GatePolicy, BootstrapConfig):
        names = [f.name for f in fields(config) if f.name in declared_by_settings
                 and (f.default is not MISSING or f.default_factory is not MISSING)
                 and not (config in own_seeds and f.name == "seed")
                 and not (config is GatePolicy and f.name == "slices")]  # none judged: an empty mapping, not a number
        if names:
            defaulted[config.__name__] = names
    assert not defaulted, f"fields that re-declare a default of flows/settings.py: {defaulted}"


def test_lora_settings_take_the_family_s_own_values():
    from flows.stage_config import lora_settings

    assert lora_settings(LoraParams()).train_heads is True
    assert lora_settings(ImageBindLoraParams(train_heads=False, dropout=0.1)).train_heads is False
