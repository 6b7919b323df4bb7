"""dvc.yaml from the stage table (`flywheel dvc-yaml`), and the files `flywheel stage --outputs` writes for it."""

from __future__ import annotations


import pytest
import yaml

from flows.dvc_outputs import pinned_versions, write_stage_outputs
from flows.dvc_pipeline import dvc_yaml_text
from flows.run_record import RunRecord
from flows.settings import load_settings
from flows.stages import built_in_stages, stage_named, stage_table
from tests.conftest import PROJECT


@pytest.fixture(scope="module")
def settings(tmp_path_factory):
    return load_settings(tmp_path_factory.mktemp("home"), PROJECT / "params.yaml")


def _generated(settings, batches=None) -> str:
    existing = yaml.safe_load((PROJECT / "dvc.yaml").read_text())
    return dvc_yaml_text(settings, stage_table(settings), PROJECT, PROJECT / "params.yaml", batches, existing)


def test_committed_dvc_yaml_is_what_flywheel_dvc_yaml_writes(settings):
    assert (PROJECT / "dvc.yaml").read_text() == _generated(settings), "run `flywheel dvc-yaml` and commit dvc.yaml"


def test_one_dvc_stage_per_lifecycle_stage_per_batch_in_lifecycle_order(settings):
    stages = yaml.safe_load(_generated(settings, ["batch-001", "batch-002"]))["stages"]
    assert {"golden", "demo_data"} <= set(stages) and not any(name.startswith("lifecycle") for name in stages)
    declared = [s.name for s in built_in_stages() if s.dvc.declared]
    assert "react" not in declared  # the loop's reaction is no reproducible output
    for batch in ("batch-001", "batch-002"):
        for before, name in zip(declared, declared[1:]):
            assert f"dvc-stages/{batch}/{before}.json" in stages[f"{name}_{batch}"]["deps"]
        assert stages[f"train_{batch}"]["cmd"] == f"flywheel stage train --batch {batch} --outputs dvc-stages/{batch}"
        assert stages[f"train_{batch}"]["outs"] == [f"dvc-stages/{batch}/train.json"]
        assert "examples/digits/data/golden" in stages[f"train_{batch}"]["deps"]  # the golden stage's out
    # The second batch's lifecycle starts once the first one's model is decided (training reads the window).
    assert stages["ingest_batch-002"]["deps"][:2] == ["dvc-stages/batch-001/gate.json", "data/landing/batch-002"]
    assert "features/clean.py" in stages["clean_batch-001"]["deps"] and "monitoring" in stages["monitor_batch-001"]["deps"]
    assert stages["monitor_batch-001"]["params"] == ["monitor", "registry", "task"]
    train = stages["train_batch-001"]
    assert train["metrics"] == [{"dvc-stages/batch-001/train.metrics.json": {"cache": False}}]
    assert [next(iter(p)) for p in train["plots"]] == ["dvc-stages/batch-001/train.confusion",
                                                      "dvc-stages/batch-001/train.recall_at_k"]
    assert train["plots"][0]["dvc-stages/batch-001/train.confusion"]["template"] == "confusion"


def test_every_declared_param_is_in_the_params_file(settings):
    params = yaml.safe_load((PROJECT / "params.yaml").read_text())
    stages = yaml.safe_load(_generated(settings))["stages"]
    for name, stage in stages.items():
        for entry in stage.get("params", []) if "cmd" in stage and "flywheel stage" in stage["cmd"] else []:
            section, _, key = entry.partition(".")
            assert section in params and (not key or key in params[section]), (name, entry)


def test_a_batch_name_dvc_refuses_is_named(settings):
    with pytest.raises(ValueError, match=r"batch names \['batch 1'\]"):
        _generated(settings, ["batch 1"])


def _record(run_id: str) -> RunRecord:
    record = RunRecord(run_id=run_id, source="data/landing/batch-001", batch_id="b1")
    record.stages["clean"] = {"rows_in": 40, "rows_out": 39, "rows_quarantined": 1, "reasons": {"corrupt_image": 1},
                              "skipped": False}
    record.cache["clean"] = {"key": "clean-0123", "cached": run_id == "run-2", "computed_by": "run-1", "seconds": 0.5}
    record.monitor = {"status": "drift", "drift_detected": True, "drifted_checks": ["data_drift"],
                      "checks": {"data_drift": {"drifted_share": 0.25, "items": {
                          "b": {"score": 0.9, "threshold": 0.5, "drifted": True, "method": "wasserstein"},
                          "a": {"score": 0.1, "threshold": 0.5, "drifted": False, "method": "wasserstein"}}}}}
    record.cache["monitor"] = {"key": "monitor-4567", "cached": False, "computed_by": run_id, "seconds": 1.0}
    return record


def test_stage_files_hold_the_key_and_recorded_numbers_and_are_the_same_bytes_on_a_rerun(settings, tmp_path):
    clean, monitor = stage_named(built_in_stages(), "clean"), stage_named(built_in_stages(), "monitor")
    first = tmp_path / "first"
    for stage in (clean, monitor):
        write_stage_outputs(settings, stage, _record("run-1"), "batch-001", first)
    assert yaml.safe_load((first / "clean.json").read_text()) == {"stage": "clean", "batch": "batch-001", "key": "clean-0123"}
    assert yaml.safe_load((first / "clean.metrics.json").read_text()) == {
        "rows_in": 40, "rows_out": 39, "rows_quarantined": 1, "quarantined": {"corrupt_image": 1}}
    assert yaml.safe_load((first / "monitor.metrics.json").read_text()) == {
        "drift_detected": True, "drifted_checks": 1, "drifted_share": 0.25}
    assert (first / "monitor.drift" / "data_drift.csv").read_text() == \
        "score,feature,threshold,drifted\n0.1,a,0.5,False\n0.9,b,0.5,True\n"
    second = tmp_path / "second"  # another run (another run id, the stage re-loaded) of the same stages
    for stage in (clean, monitor):
        write_stage_outputs(settings, stage, _record("run-2"), "batch-001", second)
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(second) for p in second.rglob("*") if p.is_file())
    assert all((first / f).read_bytes() == (second / f).read_bytes() for f in files)


def test_stages_after_train_reload_the_data_versions_train_json_names(tmp_path):
    table = built_in_stages()
    assert pinned_versions(table, "monitor", tmp_path) is None  # no train.json yet: the lake's current versions
    (tmp_path / "train.json").write_text('{"data_versions": {"inputs": "lake/inputs@abc.dir"}}')
    assert pinned_versions(table, "monitor", tmp_path) == {"inputs": "lake/inputs@abc.dir"}
    assert pinned_versions(table, "gate", tmp_path) == {"inputs": "lake/inputs@abc.dir"}
    assert pinned_versions(table, "train", tmp_path) is None  # training reads the window as it is now
    assert pinned_versions(table, "version", tmp_path) is None


def test_a_run_that_never_ran_the_stage_writes_nothing(settings, tmp_path):
    with pytest.raises(ValueError, match="stage gate has no cache entry"):
        write_stage_outputs(settings, stage_named(built_in_stages(), "gate"), RunRecord("run-1", "x"), "b", tmp_path)
    assert not any(tmp_path.iterdir())
