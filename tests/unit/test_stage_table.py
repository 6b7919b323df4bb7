"""The stage table (flows/stages.py): what every driver, cache key and run kind is derived from."""

from __future__ import annotations

import importlib.util

import pytest

from flows.stage_cache import key_inputs, stage_key
from flows.stages import (
    BUILT_IN_NAMES,
    build_table,
    built_in_stages,
    from_training,
    ingest_only,
    stage_named,
    up_to,
    watch_only,
)

REPORT = "tests.flows.project_stages.stages:count_rows"


def names(stages) -> list[str]:
    return [stage.name for stage in stages]


def test_the_table_is_the_lifecycle_in_order_and_names_real_modules():
    table = built_in_stages()
    assert tuple(names(table)) == BUILT_IN_NAMES
    for stage in table:
        for module in stage.code:
            assert importlib.util.find_spec(module) is not None, (stage.name, module)
    assert {s.name for s in table if s.retries} == {"register", "gate"}  # I/O stages only; data stages never retry
    assert {s.name for s in table if s.summary} == {"train", "register", "gate", "monitor"}


def test_run_kinds_are_slices_of_the_table():
    table = built_in_stages()
    assert names(from_training(table)) == ["version", "train", "register", "gate"]
    assert names(ingest_only(table)) == ["ingest", "clean", "validate", "transform", "label", "version", "monitor", "react"]
    assert names(watch_only(table)) == ["monitor", "react"]
    assert names(up_to(table, "validate")) == ["ingest", "clean", "validate"]
    with pytest.raises(ValueError, match="no stage 'bogus'"):
        up_to(table, "bogus")


def test_project_stages_go_where_they_say_in_the_order_written():
    table = build_table([{"after": "clean", "fn": REPORT, "name": "first"},
                         {"after": "clean", "fn": REPORT, "name": "second"},
                         {"after": "train", "fn": REPORT, "name": "after_training"}])
    assert names(table)[:4] == ["ingest", "clean", "first", "second"]
    assert stage_named(table, "first").part == "data" and stage_named(table, "after_training").part == "model"
    # A project stage before the model stages belongs to an ingest; one after train only to a training run.
    assert "first" in names(ingest_only(table)) and "after_training" not in names(ingest_only(table))
    assert "after_training" in names(from_training(table))
    with pytest.raises(ValueError, match="nothing runs after react"):
        build_table([{"after": "react", "fn": REPORT}])


def test_a_project_stage_is_keyed_by_its_own_module_and_params():
    spec = stage_named(build_table([{"after": "clean", "fn": REPORT}]), "count_rows")
    assert spec.code == ("tests.flows.project_stages.stages",)
    one = stage_key(key_inputs(spec, {}, ["clean-x"], {"params": {"a": 1}}))
    assert one == stage_key(key_inputs(spec, {}, ["clean-x"], {"params": {"a": 1}}))
    assert one != stage_key(key_inputs(spec, {}, ["clean-x"], {"params": {"a": 2}}))
    assert one != stage_key(key_inputs(spec, {}, ["clean-y"], {"params": {"a": 1}}))


def test_a_projects_labelling_functions_are_part_of_the_label_stages_code(tmp_path):
    import yaml

    from flows.settings import load_settings
    from flows.stages import stage_table
    from tests.conftest import example_params

    params = example_params()
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    label = stage_named(stage_table(load_settings(tmp_path / "home", path)), "label")
    assert label.code[-1] == params["label"]["functions"][0].partition(":")[0]  # examples.digits.labelling
    assert stage_named(built_in_stages(), "label").code == label.code[:-1]
