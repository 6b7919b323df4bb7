"""Stage keys and records (flows/stage_cache.py): what invalidates a stage, and what a record keeps."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from flows.settings import Params
from flows.stage_cache import StageRecord, StageRunner, StageStore, key_inputs, stage_key
from flows.stages import built_in_stages
from tests.conftest import PROJECT, example_params

TABLE = {stage.name: stage for stage in built_in_stages()}
CHAIN = ("clean", "validate", "transform", "label")


def project_params() -> dict:
    return Params.model_validate(example_params()).model_dump(mode="json", by_alias=True)


def chained_keys(params: dict, batch: str = "b1") -> dict[str, str]:
    """The data stages' keys as flows/pipeline.py chains them: each on the previous one's."""
    keys = {"ingest": stage_key(key_inputs(TABLE["ingest"], params, extra={"batch": batch}))}
    previous = keys["ingest"]
    for stage in CHAIN:
        keys[stage] = previous = stage_key(key_inputs(TABLE[stage], params, [previous]))
    return keys


def test_a_changed_parameter_changes_the_key_of_its_stage_and_of_every_stage_after_it_only():
    params = project_params()
    before = chained_keys(params)
    params["validate"]["max_bad_row_share"] = 0.5
    after = chained_keys(params)
    assert [stage for stage in before if before[stage] != after[stage]] == ["validate", "transform", "label"]


def test_a_new_batch_changes_every_key_and_the_same_inputs_give_the_same_keys():
    params = project_params()
    assert chained_keys(params) == chained_keys(project_params())
    first, other = chained_keys(params, "b1"), chained_keys(params, "b2")
    assert all(first[stage] != other[stage] for stage in first)


def test_a_value_a_stage_does_not_read_leaves_its_key_alone():
    params = project_params()
    train = stage_key(key_inputs(TABLE["train"], params, extra={"data": {"inputs": "lake/inputs@1"}}))
    params["gate"]["families"]["imagebind"]["thresholds"]["zero_shot_image_acc"]["min"] = 0.9  # the gate reads it, training does not
    params["monitor"]["drift_share"] = 0.9
    assert stage_key(key_inputs(TABLE["train"], params, extra={"data": {"inputs": "lake/inputs@1"}})) == train
    params["task"]["prompts"] = "a sketch of {label}"  # training's golden metrics score against the task's prompts
    assert stage_key(key_inputs(TABLE["train"], params, extra={"data": {"inputs": "lake/inputs@1"}})) != train


def test_a_completed_stage_is_reused_and_not_computed_again(tmp_path):
    store = StageStore(tmp_path / "stages")
    computed: list[str] = []
    calls: list[str] = []

    def call(name, fn, *args):
        calls.append(name)
        return fn(*args)

    def compute(key):
        computed.append(key)
        return 41, {"answer": 41}

    first = StageRunner(store, project_params(), "run-1", call, table=TABLE.values())
    key = first.key("label", ["transform-x"])
    assert first.run("label", key, compute, lambda outputs: outputs["answer"] + 1) == (41, {"answer": 41}, False)
    second = StageRunner(store, project_params(), "run-2", call, table=TABLE.values())
    assert second.run("label", key, compute, lambda outputs: outputs["answer"] + 1) == (42, {"answer": 41}, True)
    assert computed == [key] and second.entries["label"] == {"key": key, "cached": True, "computed_by": "run-1",
                                                              "seconds": first.entries["label"]["seconds"]}
    record = json.loads((tmp_path / "stages" / f"{key}.json").read_text())
    assert StageRecord(**record).inputs["upstream"] == ["transform-x"]
    assert [p.name for p in (tmp_path / "stages").iterdir()] == [f"{key}.json"]  # no temporary file left
    no_cache = StageRunner(store, project_params(), "run-3", call, reuse=False, table=TABLE.values())
    assert no_cache.run("label", key, compute, lambda outputs: 0)[2] is False and len(computed) == 2


def test_a_record_whose_outputs_are_gone_is_computed_again(tmp_path):
    store = StageStore(tmp_path / "stages")
    call = lambda name, fn, *args: fn(*args)  # noqa: E731
    first = StageRunner(store, project_params(), "run-1", call, table=TABLE.values())
    key = first.key("clean", ["ingest-x"])
    first.run("clean", key, lambda _key: (1, {"rows": str(tmp_path / "rows.parquet")}), lambda outputs: None)

    def load_rows(outputs):
        raise FileNotFoundError(outputs["rows"])  # the lake folder was removed by hand

    second = StageRunner(store, project_params(), "run-2", call, table=TABLE.values())
    assert second.run("clean", key, lambda _key: (2, {"rows": "again"}), load_rows) == (2, {"rows": "again"}, False)
    assert store.load(key).run_id == "run-2"


def test_the_fault_hook_kills_only_at_its_point():
    script = ("from flows.stage_cache import fault_point\n"
              "fault_point('clean:before')\nprint('alive', flush=True)\nfault_point('clean:after')\nprint('not reached')")
    env = {**os.environ, "FLYWHEEL_FAULT_AT": "clean:after"}
    done = subprocess.run([sys.executable, "-c", script], cwd=PROJECT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == -9 and done.stdout == "alive\n"
