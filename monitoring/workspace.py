"""Saving drift and class-mix snapshots to a local Evidently workspace, which `evidently ui --workspace DIR` serves."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from evidently.legacy.model.widget import BaseWidgetInfo
from evidently.legacy.renderers.html_widgets import text_widget
from evidently.sdk.models import DashboardModel, DashboardPanelPlot, DashboardTabModel
from evidently.ui.workspace import Project, Workspace

from features.atomic import atomic_path
from monitoring.dashboard import TabPanel, build_dashboard_panels
from monitoring.drift import DriftResult

MANAGED_BY = "managed_by"  # a plot_params key marking the panels this code defines (the UI ignores it)


REJECTED_TAG = "rejected"  # the tag of a snapshot whose batch a data stage refused


def snapshot_name(batch_id: str | None, rejected_by: str | None = None, what: str = "") -> str | None:
    """What the UI's Reports list shows for a check: `batch <id>` (`batch <id> predictions` for the class
    mix), and why it was rejected when it was. Without a batch: None for drift, `inference log predictions`."""
    if batch_id is None:
        return f"inference log {what}" if what else None
    return f"batch {batch_id}" + (f" {what}" if what else "") + (f" (REJECTED by {rejected_by})" if rejected_by else "")


def save_drift(workspace_dir: Path, project_name: str, result: DriftResult, classes: Sequence[str],
               html_path: Path | None = None, batch_id: str | None = None, rejected_by: str | None = None,
               lineage: Mapping[str, str] | None = None, links: Sequence[tuple[str, str]] = ()) -> str:
    """Add the drift snapshot as a run of project `project_name`; return the run id.

    The project is found by name or created once, with its dashboard panels (`classes`: the task's class
    names, which the prediction panels plot), so runs accumulate in one dashboard. The run is named
    `batch <batch_id>` when given, which the UI lists; `rejected_by` ("validate: <expectation>") marks a
    batch a data stage refused, in the name and with the tag `rejected`. `lineage` (run id, model name and
    version) goes into the snapshot's metadata and, as `key:value`, its tags; `links`, (label, URL) pairs of the
    other UIs' pages of the same run, into a text panel at the top of the report. With `html_path`, also write the
    self-contained HTML report (no CDN needed to view it). Not safe against two processes creating the
    same new project at the same moment.
    """
    return _save_snapshot(workspace_dir, project_name, result.snapshot, classes, html_path,
                          snapshot_name(batch_id, rejected_by), rejected_by, lineage, links)


def save_predictions(workspace_dir: Path, project_name: str, snapshot: Any, classes: Sequence[str],
                     html_path: Path | None = None, batch_id: str | None = None, rejected_by: str | None = None,
                     lineage: Mapping[str, str] | None = None, links: Sequence[tuple[str, str]] = ()) -> str:
    """Add a class-mix snapshot (`monitoring.model_drift.build_prediction_report`) as a run of the project,
    named `batch <batch_id> predictions` (`inference log predictions` without a batch); as `save_drift` otherwise."""
    return _save_snapshot(workspace_dir, project_name, snapshot, classes, html_path,
                          snapshot_name(batch_id, rejected_by, what="predictions"), rejected_by, lineage, links)


def _save_snapshot(workspace_dir: Path, project_name: str, snapshot: Any, classes: Sequence[str],
                   html_path: Path | None, name: str | None, rejected_by: str | None,
                   lineage: Mapping[str, str] | None = None, links: Sequence[tuple[str, str]] = ()) -> str:
    workspace = Workspace.create(str(workspace_dir))
    project = ensure_project(workspace, project_name, classes)
    if lineage:  # as for `rejected` below: on the snapshot add_run stores, the report's own tags untouched
        snapshot._tags = [*snapshot._tags, *(f"{key}:{value}" for key, value in lineage.items())]
        snapshot._metadata = {**snapshot._metadata, **lineage}
    if rejected_by:
        # Evidently 0.7.23 takes tags when a report runs; the drift check ran before anyone knew, so they go
        # on the snapshot it returned (what add_run stores), leaving the report's own tags as they were.
        snapshot._tags = [*snapshot._tags, REJECTED_TAG]
        snapshot._metadata = {**snapshot._metadata, "rejected_by": rejected_by}
    if links:  # Evidently shows tags and metadata as text: the links go in a Markdown panel above the report
        earlier = [widget for widget in snapshot._widgets if widget.title != LINKS_TITLE]  # saved once before
        snapshot._widgets = [links_widget(links, (lineage or {}).get("run")), *earlier]
    run = workspace.add_run(project.id, snapshot, name=name)
    if html_path is not None:
        # Snapshot.save_html silently writes nothing when given a Path (Evidently 0.7.23).
        with atomic_path(html_path, suffix=".html") as tmp:  # a reader never sees half a report
            snapshot.save_html(str(tmp))
    return str(run.id)


LINKS_TITLE = "This run in the other UIs"


def links_widget(links: Sequence[tuple[str, str]], run_id: str | None = None) -> BaseWidgetInfo:
    """A Markdown text panel of `links` ((label, URL) pairs), which the snapshot page and the HTML report render
    as links."""
    anchors = " · ".join(f"[{label}]({url})" for label, url in links)
    run = f"Run `{run_id}`: " if run_id else ""
    return text_widget(text=f"{run}{anchors}", title=LINKS_TITLE)


def ensure_project(workspace: Workspace, name: str, classes: Sequence[str]) -> Project:
    """The project of registered model `name`, created if missing, its dashboard synced with the code
    (`classes`: the task's class names, which the prediction panels plot)."""
    project = _find_or_create_project(workspace, name)
    dashboard = workspace.get_dashboard(project.id)
    synced = sync_dashboard(dashboard, build_dashboard_panels(classes))
    if synced != dashboard:
        workspace.save_dashboard(project.id, synced)
    return project


def sync_dashboard(dashboard: DashboardModel, wanted: list[TabPanel]) -> DashboardModel:
    """`dashboard` with each wanted panel present exactly once in its tab, matched by (tab, title).

    A matched panel keeps its id and takes the code's definition; a panel the code made earlier
    but no longer defines (renamed, dropped) goes; panels added by hand in the UI stay. Running
    it again on its own result changes nothing.
    """
    wanted_keys = {(item.tab, item.panel.title) for item in wanted}
    tabs = [tab.copy(deep=True) for tab in dashboard.tabs]
    panels = {panel.id: panel for panel in dashboard.panels}
    for tab in tabs:
        for pid in [pid for pid in tab.panels if pid in panels and _is_ours(panels[pid])]:
            if (tab.title, panels[pid].title) not in wanted_keys:
                tab.panels.remove(pid)
                del panels[pid]
    for item in wanted:
        tab = next((t for t in tabs if t.title == item.tab), None)
        if tab is None:
            tab = DashboardTabModel(title=item.tab, panels=[])
            tabs.append(tab)
        ours = item.panel.copy(update={"plot_params": {**item.panel.plot_params, MANAGED_BY: "flywheel"}})
        existing = next((pid for pid in tab.panels if pid in panels and panels[pid].title == ours.title), None)
        if existing is None:
            panels[ours.id] = ours
            tab.panels.append(ours.id)
        else:
            panels[existing] = ours.copy(update={"id": existing})
    return DashboardModel(tabs=tabs, panels=list(panels.values()))


def project_id(workspace_dir: Path, name: str) -> str | None:
    """The id of the project named `name` (the one every save picks), None when there is none yet: with a
    snapshot id it addresses the report in `evidently ui` (/projects/<project id>/reports/<snapshot id>)."""
    matches = sorted(Workspace.create(str(workspace_dir)).search_project(name), key=lambda project: str(project.id))
    return str(matches[0].id) if matches else None


def _is_ours(panel: DashboardPanelPlot) -> bool:
    return panel.plot_params.get(MANAGED_BY) == "flywheel"


def _find_or_create_project(workspace: Workspace, name: str) -> Project:
    matches = sorted(workspace.search_project(name), key=lambda project: str(project.id))
    if matches:
        return matches[0]  # sorted, so every caller picks the same one if duplicates exist
    return workspace.create_project(name, description=f"flywheel monitoring of registered model {name}")
