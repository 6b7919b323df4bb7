"""One run id everywhere, and links between the four UIs for it.

The run id (`runs/<run_id>/`) names the Prefect flow run, is the MLflow training run's name and its
`flow_run` tag, the GX results' run name and the Evidently snapshots' `run:` tag. At the end of a run
`link_mlflow_runs` writes, on the MLflow runs this run made (training, drift), where the other UIs show
the same run: the Prefect flow run, the GX Data Docs page of its validation, its drift report and
Evidently snapshot. Addresses of UIs that are started by hand (MLflow's, Evidently's) are the ports
`flywheel ui` prints. MLflow's UI shows tag values as plain text, so the same links also go, clickable, at the
top of each run's description (`mlflow.note.content`), which the run page renders as Markdown.
"""

from __future__ import annotations

import logging
from pathlib import Path
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, unquote, urlparse

from flows.run_record import RunRecord
from flows.settings import Settings

log = logging.getLogger(__name__)

RUN_ID_TAG = "flywheel.run_id"  # on every MLflow run a flywheel run made
LINK_TAG = "links."  # links.<ui>: where the other UIs show this run
MLFLOW_UI = "http://127.0.0.1:5000"  # `flywheel ui`'s `mlflow ui --port 5000`, when tracking is a local store
EVIDENTLY_UI = "http://127.0.0.1:8000"  # `flywheel ui`'s `evidently ui --port 8000`
# `flywheel ui`'s `python -m http.server 8001` on the GX Data Docs site: over http, the other UIs' pages can link
# a validation result (a browser follows no file:// link from an http page).
DATA_DOCS_UI = "http://127.0.0.1:8001"
NOTE_TAG = "mlflow.note.content"  # the run's description, Markdown on the run page
NOTE_LINKS_START, NOTE_LINKS_END = "<!-- flywheel links -->", "<!-- /flywheel links -->"  # replaced whole on a rerun
# links.<ui> → how the description names it; an http page cannot open file:// links, so those are shown as paths.
NOTE_LINK_NAMES = {"prefect_flow_run": "Prefect flow run", "evidently_snapshot": "Evidently snapshot",
                   "data_docs": "Data Docs validation result", "drift_report": "drift report (HTML)"}


def mlflow_ui_url(settings: Settings) -> str:
    """The MLflow UI's address: the tracking server itself when there is one, else `mlflow ui` as `flywheel ui` starts it."""
    uri = settings.tracking_uri
    return uri.rstrip("/") if uri.startswith(("http://", "https://")) else MLFLOW_UI


def model_version_url(settings: Settings, model_name: str, version: str) -> str:
    from models.model_card import version_page

    return f"{mlflow_ui_url(settings)}/{version_page(model_name, version)}"


def mlflow_run_url(settings: Settings, experiment_id: str, run_id: str) -> str:
    from models.model_card import run_page

    return f"{mlflow_ui_url(settings)}/{run_page(experiment_id, run_id)}"


def file_url(path: str | Path) -> str:
    return "file://" + quote(str(Path(path).absolute()))


def data_docs_site(page: Path) -> Path | None:
    """The GX Data Docs site that holds `page`: the nearest folder above it with an index page and validations."""
    for folder in Path(page).parents:
        if (folder / "index.html").is_file() and (folder / "validations").is_dir():
            return folder
    return None


def data_docs_url(page: str | Path) -> str:
    """`page` as `flywheel ui`'s Data Docs server shows it; its file:// address when it is in no site."""
    site = data_docs_site(Path(page))
    if site is None:
        return file_url(page)
    return f"{DATA_DOCS_UI}/{quote(Path(page).absolute().relative_to(site.absolute()).as_posix())}"


def run_links(record: RunRecord) -> dict[str, str]:
    """Where the other UIs show this run, from its summary: links.<ui> → URL."""
    links = {f"{LINK_TAG}{name}": url for name, url in record.links.items() if url}
    validate = record.stages.get("validate") or {}
    page = validate.get("data_docs_page") or validate.get("data_docs")
    if page:
        links[f"{LINK_TAG}data_docs"] = data_docs_url(page)
    if record.monitor.get("report"):
        links[f"{LINK_TAG}drift_report"] = file_url(record.monitor["report"])
    snapshot = evidently_report_url(record.monitor)
    if snapshot:
        links[f"{LINK_TAG}evidently_snapshot"] = snapshot
    return links


def evidently_report_url(monitor: Mapping[str, Any]) -> str | None:
    """The drift snapshot's page in `evidently ui` as `flywheel ui` starts it; its bare id when the project's is
    not recorded (a summary written before it was)."""
    snapshot, project = monitor.get("evidently_snapshot"), monitor.get("evidently_project_id")
    if not snapshot:
        return None
    return f"{EVIDENTLY_UI}/projects/{project}/reports/{snapshot}" if project else str(snapshot)


def note_with_links(note: str, links: Mapping[str, str]) -> str:
    """`note` with a first paragraph linking the other UIs (any earlier one replaced): http(s) links clickable,
    file:// pages as their paths, to paste in the address bar (a browser opens no file:// link from an http page)."""
    if NOTE_LINKS_START in note and NOTE_LINKS_END in note:
        head, _, rest = note.partition(NOTE_LINKS_START)
        note = head + rest.partition(NOTE_LINKS_END)[2].lstrip("\n")
    shown = []
    for name, label in NOTE_LINK_NAMES.items():
        url = links.get(f"{LINK_TAG}{name}")
        if url and url.startswith("file://"):
            shown.append(f"{label}: `{Path(unquote(urlparse(url).path))}`")
        elif url and url.startswith(("http://", "https://")):
            shown.append(f"[{label}]({url})")
    if not shown:
        return note
    return f"{NOTE_LINKS_START}\nThis flywheel run in the other UIs: {' · '.join(shown)}\n{NOTE_LINKS_END}\n\n{note}"


def mlflow_runs_of(record: RunRecord) -> list[str]:
    """The MLflow runs this flywheel run made: its training and its drift check, not those an earlier run made
    and this one reused from the stage cache (they keep that run's links)."""

    def made_here(stage: str) -> bool:
        return (record.cache.get(stage) or {}).get("computed_by", record.run_id) == record.run_id

    runs = []
    if record.train.get("mlflow_run_id") and made_here("train"):
        runs.append(record.train["mlflow_run_id"])
    if record.monitor.get("mlflow_run") and made_here("monitor"):
        runs.append(record.monitor["mlflow_run"])
    return runs


def link_mlflow_runs(settings: Settings, record: RunRecord) -> None:
    """Tag this run's MLflow runs with the run id and the links; a tracking store out of reach is logged, not
    raised: the links are a convenience, and the run's own outcome stands."""
    runs = mlflow_runs_of(record)
    if not runs:
        return
    tags = {RUN_ID_TAG: record.run_id, **run_links(record)}
    try:
        from mlflow.entities import RunTag

        from flows.stage_config import registry_for

        client = registry_for(settings).client()
        for run_id in runs:
            note = note_with_links(client.get_run(run_id).data.tags.get(NOTE_TAG, ""), tags)
            written = [RunTag(key, value[:5000]) for key, value in tags.items()] + [RunTag(NOTE_TAG, note[:8000])]
            client.log_batch(run_id, tags=written, synchronous=True)
    except Exception as err:  # noqa: BLE001 - any tracking failure; the run's result is already recorded
        log.warning("could not write the links of run %s on its MLflow runs %s: %s", record.run_id, runs, err)


def other_ui_links(settings: Settings, links: Mapping[str, str], model_version: str | None,
                   leave_out: str) -> list[tuple[str, str]]:
    """(label, URL) of the UIs other than `leave_out` (`prefect_flow_run`, `mlflow`, `data_docs`,
    `evidently_snapshot`) that show a run: `links` as `run_links` names them (with or without the `links.`
    prefix), `model_version` the MLflow version it registered or checked. Only http(s) addresses: a page a browser
    shows can follow those."""
    named = {key.removeprefix(LINK_TAG): url for key, url in links.items()}
    if model_version:
        named["mlflow"] = model_version_url(settings, settings.params.registry.model_name, model_version)
    labels = {"prefect_flow_run": "Prefect flow run", "mlflow": f"MLflow model version {model_version}",
              "data_docs": "GX Data Docs validation result", "evidently_snapshot": "Evidently drift snapshot"}
    return [(label, named[key]) for key, label in labels.items()
            if key != leave_out and str(named.get(key) or "").startswith(("http://", "https://"))]


def link_data_docs_page(settings: Settings, record: RunRecord) -> None:
    """Put on this run's Data Docs validation page (when this run validated, not an earlier one whose result it
    reused) a banner linking the Prefect flow run, the model version and the Evidently snapshot."""
    from features.data_docs import link_other_uis

    page = (record.stages.get("validate") or {}).get("data_docs_page")
    if not page or (record.cache.get("validate") or {}).get("computed_by", record.run_id) != record.run_id:
        return
    links = other_ui_links(settings, run_links(record), (record.model or {}).get("version"), leave_out="data_docs")
    try:
        link_other_uis(Path(page), record.run_id, links)
    except OSError as err:  # a convenience, as the MLflow links are: the run's outcome stands
        log.warning("could not link the Data Docs page %s of run %s to the other UIs: %s", page, record.run_id, err)


def prefect_links() -> dict[str, str]:
    """The current Prefect flow run's page, inside a flow run (`{}` outside one: a process that never imported
    Prefect runs none, and a plain run does not pay Prefect's import to find that out)."""
    import sys

    if "prefect" not in sys.modules:
        return {}
    from prefect.runtime import flow_run

    url = flow_run.ui_url
    return {"prefect_flow_run": url} if url else {}


def summary_links(summary: Mapping[str, Any]) -> dict[str, str]:
    """run_links of a summary read back from summary.json."""
    return run_links(RunRecord(**summary))
