"""Which MLflow runs a flywheel run links, and the links it writes on them (flows/run_links.py)."""

from __future__ import annotations

from flows.run_links import NOTE_LINKS_START, evidently_report_url, mlflow_runs_of, note_with_links, run_links
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


def test_the_run_description_links_the_http_uis_names_the_file_pages_and_is_replaced_not_repeated(tmp_path):
    page = tmp_path / "gx" / "b 1.html"
    links = {"links.prefect_flow_run": "http://127.0.0.1:4200/flow-runs/flow-run/1",
             "links.evidently_snapshot": "http://127.0.0.1:8000/projects/p1/reports/s1",
             "links.data_docs": f"file://{tmp_path}/gx/b%201.html", "flywheel.run_id": "r2"}
    note = note_with_links("Trained by flywheel run `r2`.\n", links)
    head, _, rest = note.partition("\n\n")
    assert "[Prefect flow run](http://127.0.0.1:4200/flow-runs/flow-run/1)" in head
    assert "[Evidently snapshot](http://127.0.0.1:8000/projects/p1/reports/s1)" in head
    assert f"Data Docs validation result: `{page}`" in head and "file://" not in head  # no link an http page can open
    assert rest == "Trained by flywheel run `r2`.\n"  # the note itself follows, untouched
    moved = {**links, "links.evidently_snapshot": "http://127.0.0.1:8000/projects/p1/reports/s2"}
    again = note_with_links(note, moved)
    assert again.count(NOTE_LINKS_START) == 1 and "reports/s2" in again and "reports/s1" not in again
    assert again.endswith("Trained by flywheel run `r2`.\n")
    assert note_with_links("plain\n", {"flywheel.run_id": "r2"}) == "plain\n"  # nothing to link: unchanged
