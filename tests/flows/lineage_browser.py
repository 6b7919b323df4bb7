"""A user follows one run around the four UIs in a browser, offline, by links alone: Prefect flow run → gate
artifact → MLflow model version (its card) → MLflow training run → GX Data Docs result → Evidently snapshot →
back to the Prefect flow run, a screenshot at each step. The links make a cycle, so from any one of the four UIs
a user reaches the other three.

Collected from tests/flows/test_lineage.py (which imports this test), so it reuses that module's lifecycle state
instead of building another. The links are the addresses `flywheel ui` serves the UIs at (MLflow :5000,
Evidently :8000, the Data Docs site :8001) and the Prefect API's own address (the test harness's, whose server
has no UI); the test serves each UI on a free port and the browser redirects those addresses there, so the pages,
their links and what a user clicks are the product's own. Every request to anything but localhost is aborted and
must not happen.
"""

from __future__ import annotations

import os
import re
import sys
from contextlib import ExitStack
from pathlib import Path
from urllib.parse import urlparse

from features.data_docs import LINKS_START
from flows.run_links import DATA_DOCS_UI, data_docs_site, evidently_report_url, mlflow_ui_url
from monitoring.workspace import LINKS_TITLE
from tests.flows.browser_ui import UI_WAIT_MS, browser, free_port, started, wait_until_answered  # noqa: F401 (browser: the fixture)

NOT_LOCAL = re.compile(r"^(?!(?:file:|data:|blob:|https?://(?:127\.0\.0\.1|localhost)[:/]))")


def _origin(url: str) -> str:
    parts = urlparse(url)
    return f"{parts.scheme}://{parts.netloc}"


def _screenshots_dir(tmp_path: Path) -> Path:
    """$FLYWHEEL_TEST_ARTIFACTS/lineage_browser when CI keeps artifacts, else the test's tmp path."""
    root = os.environ.get("FLYWHEEL_TEST_ARTIFACTS")
    folder = Path(root) / "lineage_browser" if root else tmp_path / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _follow(page, link):
    """Click `link` as a user does; the page the destination opened in (a new tab for target=_blank)."""
    if link.get_attribute("target") == "_blank":
        with page.context.expect_page() as opened:  # the context's bound (UI_WAIT_MS), for the tab and its page
            link.click()
        return opened.value
    link.click()
    return page


def test_a_user_follows_one_run_by_links_from_prefect_through_mlflow_data_docs_and_evidently_back_to_prefect(
        state, browser, tmp_path):  # noqa: F811
    from prefect.settings import PREFECT_SERVER_DATABASE_CONNECTION_URL

    settings, _, _, second, _ = state
    name, run_id, monitor = settings.params.registry.model_name, second["run_id"], second["monitor"]
    flow_run_url, train_run = second["links"]["prefect_flow_run"], second["train"]["mlflow_run_id"]
    shots = _screenshots_dir(tmp_path)
    shown: list[tuple[Path, str]] = []

    def screenshot(page, file: str, what: str) -> None:
        page.screenshot(path=str(shots / file))
        shown.append((shots / file, what))

    bin_dir = Path(sys.executable).parent
    ports = {ui: free_port() for ui in ("prefect", "mlflow", "evidently", "data_docs")}
    served = {ui: f"http://127.0.0.1:{port}" for ui, port in ports.items()}
    # The addresses the links name → where this test serves them.
    snapshot_url = evidently_report_url(monitor)
    mapped = {_origin(flow_run_url): served["prefect"], _origin(mlflow_ui_url(settings)): served["mlflow"],
              _origin(snapshot_url): served["evidently"], DATA_DOCS_UI: served["data_docs"]}
    data_docs = Path(second["stages"]["validate"]["data_docs_page"])
    assert LINKS_START in data_docs.read_text()  # the run linked its validation page to the other UIs
    blocked: list[str] = []

    def redirected(route):  # a link to a UI's address → the same page where this test serves that UI
        origin = _origin(route.request.url)
        route.fulfill(status=307, headers={"Location": mapped[origin] + route.request.url[len(origin):]})

    def aborted(route):
        blocked.append(route.request.url)
        route.abort()

    with ExitStack() as stack:
        # All four start at once (each takes seconds on a busy machine), then the test waits for each.
        servers = {
            # The Prefect UI on the harness's database (the harness's server serves no UI), with an API of its own.
            "prefect": ([str(bin_dir / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(ports["prefect"]),
                         "--no-services", "--analytics-off"], f"{served['prefect']}/api/health",
                        {"PREFECT_SERVER_DATABASE_CONNECTION_URL": PREFECT_SERVER_DATABASE_CONNECTION_URL.value(),
                         "PREFECT_UI_API_URL": f"{served['prefect']}/api", "PREFECT_SERVER_UI_ENABLED": "1"}),
            "mlflow": ([str(bin_dir / "mlflow"), "ui", "--backend-store-uri", settings.tracking_uri, "--host", "127.0.0.1",
                        "--port", str(ports["mlflow"]), "--workers", "1"], f"{served['mlflow']}/health", None),
            "evidently": ([str(bin_dir / "evidently"), "ui", "--workspace", str(settings.paths.evidently), "--host",
                           "127.0.0.1", "--port", str(ports["evidently"])], served["evidently"], None),
            # What `flywheel ui` prints for the Data Docs.
            "data_docs": ([sys.executable, "-m", "http.server", str(ports["data_docs"]), "--bind", "127.0.0.1",
                           "--directory", str(data_docs_site(data_docs))], served["data_docs"], None),
        }
        running = {ui: stack.enter_context(started(command, env)) for ui, (command, _, env) in servers.items()}
        for ui, (_, ready_url, _) in servers.items():
            wait_until_answered(running[ui], ready_url, ui)
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        context.set_default_timeout(UI_WAIT_MS)  # its pages and new tabs (Playwright: 30 s otherwise)
        stack.callback(context.close)
        # Patterns are matched in the browser's driver: only the requests they name cross over to this process.
        context.route(re.compile("^(?:" + "|".join(re.escape(origin) for origin in mapped) + ")(?:/|$)"), redirected)
        context.route(NOT_LOCAL, aborted)
        page = context.new_page()

        # 1. Prefect: the flow run named after the run id (the link `flywheel lineage` prints), its gate artifact.
        page.goto(flow_run_url)
        page.get_by_text(f"run:{run_id}", exact=True).first.wait_for()
        page.get_by_role("tab", name="Artifacts").or_(page.get_by_text("Artifacts", exact=True)).first.click()
        page.get_by_text("gate-decision", exact=True).first.wait_for()
        page.get_by_text("drift-report", exact=True).first.wait_for()
        screenshot(page, "01_prefect_flow_run.png", f"Prefect flow run {run_id}, its Artifacts tab: gate-decision and drift-report")
        page.get_by_text("gate-decision", exact=True).first.click()
        version_link = page.locator(f"a[href$='#/models/{name}/versions/2']")
        version_link.wait_for()
        page.get_by_text(f"Gate decision for {name} v2").wait_for()
        screenshot(page, "02_prefect_gate_artifact.png", "the gate-decision artifact: PASSED, with the link to the MLflow model version")

        # 2. MLflow: the model version's card, then its source run, whose description links the other UIs.
        page = _follow(page, version_link)
        page.get_by_text("Golden-set metrics per slice", exact=True).wait_for()
        page.get_by_text("PASSED", exact=True).first.wait_for()
        assert page.locator("a", has_text="Prefect flow run").first.get_attribute("href") == flow_run_url  # back to step 1
        screenshot(page, "03_mlflow_model_card.png", f"MLflow {name} v2: the model card (gate PASSED, checks) and the source run")
        page = _follow(page, page.locator(f"a[href$='/runs/{train_run}']").first)
        page.get_by_text("This flywheel run in the other UIs", exact=False).wait_for()
        tags = set(page.locator("[title^='links.']").evaluate_all("spans => spans.map(span => span.title)"))
        assert {"links.prefect_flow_run", "links.data_docs", "links.drift_report", "links.evidently_snapshot"} <= tags, tags
        note = page.locator("a", has_text="Evidently snapshot").first
        assert note.get_attribute("href") == snapshot_url
        assert page.locator("a", has_text="Prefect flow run").first.get_attribute("href") == flow_run_url
        assert page.locator(f"a[href$='#/models/{name}/versions/2']").count() >= 1  # "Registered models", back to the card
        screenshot(page, "04_mlflow_training_run.png", "MLflow training run: its description links the Prefect flow run, "
                   "the Data Docs validation result and the Evidently snapshot; the links.* tags")

        # 3. GX Data Docs: the validation result the run's description links, with the run's banner of links.
        page = _follow(page, page.locator("a", has_text="Data Docs validation result").first)
        results = page.locator(".bootstrap-table table", has=page.locator("th", has_text="Observed Value"))
        results.first.wait_for()
        assert results.first.locator("tbody tr").count() >= 1
        banner = page.locator("#flywheel-links")
        banner.get_by_text(run_id).wait_for()
        assert banner.locator("a", has_text="Prefect flow run").get_attribute("href") == flow_run_url
        assert banner.locator("a", has_text="MLflow model version 2").get_attribute("href").endswith(f"#/models/{name}/versions/2")
        screenshot(page, "05_data_docs_result.png", f"GX Data Docs validation result of run {run_id}: the results table "
                   "under the banner linking the Prefect flow run, the MLflow model version and the Evidently snapshot")

        # 4. Evidently: the snapshot the banner links, its panel of links, and its tags in the project's reports.
        page = _follow(page, banner.locator("a", has_text="Evidently drift snapshot"))
        page.get_by_text("Dataset Drift", exact=True).first.wait_for()
        page.get_by_text(LINKS_TITLE).first.wait_for()
        panel_links = {link.inner_text(): link.get_attribute("href") for link in page.locator("a[href^='http']").all()}
        assert panel_links.get("Prefect flow run") == flow_run_url, panel_links
        assert panel_links.get("MLflow model version 2", "").endswith(f"#/models/{name}/versions/2"), panel_links
        assert panel_links.get("GX Data Docs validation result", "").startswith(DATA_DOCS_UI), panel_links
        screenshot(page, "06_evidently_snapshot.png", f"Evidently snapshot {monitor['evidently_snapshot']}: the links "
                   "to the other UIs above the data drift report")
        page.locator("a", has_text=re.compile(r"^Reports$")).first.click()
        row = page.get_by_role("row").filter(has_text=monitor["evidently_snapshot"])
        row.first.wait_for()
        listed = re.sub(r"\s+", "", row.first.inner_text())
        assert f"run:{run_id}" in listed and '"model_version":"2"' in listed and f'"run":"{run_id}"' in listed
        screenshot(page, "07_evidently_reports.png", "Evidently reports list: the snapshot's tags (run:<run id>, model) "
                   "and metadata (run, model, model_version 2)")

        # 5. Back to where the user started: the snapshot's link to the Prefect flow run.
        page.go_back()
        page = _follow(page, page.locator("a", has_text="Prefect flow run").first)
        page.get_by_text(f"run:{run_id}", exact=True).first.wait_for()
        screenshot(page, "08_prefect_flow_run_again.png", f"back at Prefect flow run {run_id}, from the Evidently snapshot")

    assert blocked == []  # nothing was asked of the network
    listing = "\n".join(f"{path}: {what}" for path, what in shown)
    (shots / "screenshots.txt").write_text(listing + "\n")
    print(f"\nscreenshots in {shots}:\n{listing}")

