"""Which MLflow runs a flywheel run links, and the links it writes on them (flows/run_links.py)."""

from __future__ import annotations

from flows.run_links import evidently_report_url, mlflow_runs_of, run_links
from flows.run_record import RunRecord


def record(**fields) -> RunRecord:
    return RunRecord(run_id="r2", source="batch", **fields)


def test_only_the_mlflow_runs_this_run_made_are_linked_not_those_it_reused_from_an_earlier_run():
    made = record(train={"mlflow_run_id": "t2"}, monitor={"mlflow_run": "d2"},
                  cache={"train": {"computed_by": "r2"}, "monitor": {"computed_by": "r2"}})
    assert mlflow_runs_of(made) == ["t2", "d2"]
    reused = record(train={"mlflow_run_id": "t1"}, monitor={"mlflow_run": "d1"},
                    cache={"train": {"computed_by": "r1"}, "monitor": {"computed_by": "r1"}})
    assert mlflow_runs_of(reused) == []  # they keep run r1's links
    assert mlflow_runs_of(record()) == []  # a rejected batch: nothing trained, no drift run


def test_the_links_name_the_flow_run_this_validations_page_the_drift_report_and_the_evidently_report(tmp_path):
    page = tmp_path / "gx" / "validations" / "clean_rows" / "r2" / "t" / "b.html"
    links = run_links(record(links={"prefect_flow_run": "http://127.0.0.1:4200/flow-runs/flow-run/1"},
                             stages={"validate": {"data_docs": str(tmp_path / "index.html"), "data_docs_page": str(page)}},
                             monitor={"report": str(tmp_path / "drift report.html"), "evidently_snapshot": "s1",
                                      "evidently_project_id": "p1"}))
    assert links == {"links.prefect_flow_run": "http://127.0.0.1:4200/flow-runs/flow-run/1",
                     "links.data_docs": f"file://{page}",
                     "links.drift_report": f"file://{tmp_path}/drift%20report.html",
                     "links.evidently_snapshot": "http://127.0.0.1:8000/projects/p1/reports/s1"}
    assert evidently_report_url({"evidently_snapshot": "s1"}) == "s1"  # no project recorded: the bare id
