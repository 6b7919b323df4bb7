"""Which MLflow runs a flywheel run links, and the links it writes on them (flows/run_links.py)."""

from __future__ import annotations

from pathlib import Path

from features.data_docs import LINKS_START, link_other_uis
from flows.run_links import (
    DATA_DOCS_UI,
    NOTE_LINKS_START,
    data_docs_url,
    evidently_report_url,
    mlflow_runs_of,
    note_with_links,
    other_ui_links,
    run_links,
)
from flows.run_record import RunRecord
from flows.settings import load_settings
from tests.conftest import PROJECT


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


def _site(tmp_path: Path) -> Path:
    """A Data Docs site as GX lays it out, with one validation page."""
    site = tmp_path / "gx" / "local_site"
    page = site / "validations" / "clean_rows" / "run 2" / "20261205T1Z" / "flywheel-clean_rows.html"
    page.parent.mkdir(parents=True)
    (site / "index.html").write_text("<html><body>index</body></html>")
    page.write_text('<html><body><nav>GX</nav><div class="col-md-10"><div id="section-1" class="ge-section">'
                    "results</div></div></body></html>")
    return page


def test_a_data_docs_page_is_linked_where_flywheel_ui_serves_the_site_and_elsewhere_by_its_file(tmp_path):
    page = _site(tmp_path)
    assert data_docs_url(page) == f"{DATA_DOCS_UI}/validations/clean_rows/run%202/20261205T1Z/flywheel-clean_rows.html"
    loose = tmp_path / "loose.html"
    assert data_docs_url(loose) == f"file://{loose}"  # in no site: the file itself


def test_a_validation_page_gets_one_banner_of_links_above_its_results_replaced_on_a_rerun(tmp_path):
    page = _site(tmp_path)
    assert link_other_uis(page, "r2", [("Prefect flow run", "http://127.0.0.1:4200/flow-runs/flow-run/1"),
                                       ("MLflow <v2>", "http://127.0.0.1:5000/#/models/m/versions/2?a=1&b=2")])
    html = page.read_text()
    assert html.index(LINKS_START) < html.index('id="section-1"') and html.index("<nav>") < html.index(LINKS_START)
    assert '<a href="http://127.0.0.1:4200/flow-runs/flow-run/1">Prefect flow run</a>' in html
    assert '<a href="http://127.0.0.1:5000/#/models/m/versions/2?a=1&amp;b=2">MLflow &lt;v2&gt;</a>' in html
    assert "<code>r2</code>" in html
    assert link_other_uis(page, "r2", [("Prefect flow run", "http://127.0.0.1:4200/flow-runs/flow-run/9")])
    again = page.read_text()
    assert again.count(LINKS_START) == 1 and "flow-run/9" in again and "flow-run/1" not in again
    assert not link_other_uis(page, "r2", [("Prefect flow run", "http://127.0.0.1:4200/flow-runs/flow-run/9")])
    assert not link_other_uis(tmp_path / "missing.html", "r2", [("a", "http://x")])


def test_the_pages_of_the_other_uis_are_the_http_ones_and_never_the_page_itself(tmp_path):
    settings = load_settings(tmp_path / "home", PROJECT / "params.yaml")
    name = settings.params.registry.model_name
    links = {"links.prefect_flow_run": "http://127.0.0.1:4200/flow-runs/flow-run/1",
             "links.data_docs": "file:///tmp/page.html", "links.drift_report": "file:///tmp/drift.html",
             "links.evidently_snapshot": "http://127.0.0.1:8000/projects/p/reports/s"}
    assert other_ui_links(settings, links, "3", leave_out="data_docs") == [
        ("Prefect flow run", "http://127.0.0.1:4200/flow-runs/flow-run/1"),
        ("MLflow model version 3", f"http://127.0.0.1:5000/#/models/{name}/versions/3"),
        ("Evidently drift snapshot", "http://127.0.0.1:8000/projects/p/reports/s")]
    labels = [label for label, _ in other_ui_links(settings, links, None, leave_out="evidently_snapshot")]
    assert labels == ["Prefect flow run"]  # no version, and a file:// page is no link for a browser
