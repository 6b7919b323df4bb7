"""Model families are plug-ins: found by entry point or import path, checked at start-up, and the core
calls them through one protocol instead of branching on a family's name."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from flows.settings import load_params
from models.family import BUILT_IN_FAMILIES, ModelFamily, load_family, registered_families
from tests.conftest import PROJECT, example_params

CORE = ("flows", "features", "models", "monitoring")


def write(tmp_path: Path, params: dict) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def test_the_built_in_families_are_found_by_name_and_by_import_path():
    for name, path in BUILT_IN_FAMILIES.items():
        by_name, by_path = load_family(name), load_family(path)
        assert isinstance(by_name, ModelFamily) and by_name.name == by_path.name == name
        assert type(by_name) is type(by_path)


def test_the_built_ins_resolve_without_entry_points_in_the_installed_metadata(monkeypatch):
    import models.family

    monkeypatch.setattr(models.family, "entry_points", lambda group: [])
    load_family.cache_clear()
    try:
        assert registered_families() == BUILT_IN_FAMILIES
        assert load_family("lora").name == "lora"
    finally:
        load_family.cache_clear()


def test_an_unknown_family_names_the_registered_ones_and_the_import_path_form():
    with pytest.raises(ValueError, match=r"unknown model family 'bert'.*'imagebind', 'lora'.*package\.module:Attribute"):
        load_family("bert")
    with pytest.raises(ValueError, match=r"cannot import module 'no_such_pkg.family' \(No module named 'no_such_pkg'\)"):
        load_family("no_such_pkg.family:Family")
    with pytest.raises(ValueError, match=r"module 'models.family' has no attribute 'Nothing'"):
        load_family("models.family:Nothing")
    with pytest.raises(TypeError, match=r"lacks \[.*'train'.*\]; a family implements models.family.ModelFamily"):
        load_family("pathlib:PurePath")
    with pytest.raises(TypeError, match=r"the class TrainRequest must be callable without arguments"):
        load_family("models.family:TrainRequest")


def test_train_family_takes_an_import_path_and_names_the_registered_model_after_the_family(tmp_path):
    params = example_params()
    params["train"]["family"] = "flows.families.lora:LoraFamily"
    loaded = load_params(write(tmp_path, params))
    assert loaded.train.family == "flows.families.lora:LoraFamily" and loaded.registry.model_name == "flywheel-lora"


def test_the_old_gate_keys_stop_at_start_up_saying_where_they_moved(tmp_path):
    for key, moved in [("thresholds", "gate.families.imagebind.thresholds"), ("slices", "gate.families.imagebind.slices"),
                       ("lora", "gate.families.lora")]:
        params = example_params()
        params["gate"][key] = {}
        with pytest.raises(ValueError, match=rf"gate\.{key} moved to {re.escape(moved)}"):
            load_params(write(tmp_path, params))


def test_a_gated_metric_the_family_does_not_compute_stops_at_start_up(tmp_path):
    params = example_params()
    params["gate"]["families"]["lora"]["thresholds"]["zero_shot_image_acc"] = {"min": 0.5}
    with pytest.raises(ValueError, match=r"gate\.families\.lora\.thresholds: 'zero_shot_image_acc' is not a metric of "
                                         r"the lora family; it computes \['caption_acc'"):
        load_params(write(tmp_path, params))
    params = example_params()
    params["gate"]["families"]["not-installed"] = {"thresholds": {"anything": {"min": 0.5}}}
    assert "not-installed" in load_params(write(tmp_path, params)).gate.families  # its plug-in is not here to ask


def test_no_core_module_branches_on_a_family_name():
    """Only a family's own modules and its saved-model I/O name it; nothing compares against a name."""
    branch = re.compile(r"""(==|!=|\bin\b)\s*\(?\s*(["'](imagebind|lora)["']|IMAGEBIND_FAMILY|LORA_FAMILY)"""
                        r"""|(IMAGEBIND_FAMILY|LORA_FAMILY|["'](imagebind|lora)["'])\s*(==|!=)""")
    found = [f"{path.relative_to(PROJECT)}:{n}: {line.strip()}"
             for package in CORE for path in sorted((PROJECT / package).rglob("*.py"))
             for n, line in enumerate(path.read_text().splitlines(), 1) if branch.search(line)]
    allowed = {"models/artifacts.py"}  # each built-in family's loader refuses a folder of the other family
    assert [f for f in found if f.split(":")[0] not in allowed] == []
    assert "train.family" not in (PROJECT / "flows" / "pipeline.py").read_text().replace("`train.family`", "")
