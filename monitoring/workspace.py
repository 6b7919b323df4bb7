"""Saving drift results to a local Evidently workspace, which `evidently ui --workspace DIR` serves."""

from __future__ import annotations

from pathlib import Path

from evidently.ui.workspace import Project, Workspace

from monitoring.drift import DriftResult


def save_drift(workspace_dir: Path, project_name: str, result: DriftResult, html_path: Path | None = None) -> str:
    """Add the drift snapshot as a run of project `project_name`; return the run id.

    The project is found by name or created once, so runs accumulate in one dashboard.
    With `html_path`, also write the self-contained HTML report (no CDN needed to view it).
    Not safe against two processes creating the same new project at the same moment.
    """
    workspace = Workspace.create(str(workspace_dir))
    project = _find_or_create_project(workspace, project_name)
    run = workspace.add_run(project.id, result.snapshot)
    if html_path is not None:
        html_path.parent.mkdir(parents=True, exist_ok=True)
        # Snapshot.save_html silently writes nothing when given a Path (Evidently 0.7.23).
        result.snapshot.save_html(str(html_path))
    return str(run.id)


def _find_or_create_project(workspace: Workspace, name: str) -> Project:
    matches = sorted(workspace.search_project(name), key=lambda project: str(project.id))
    if matches:
        return matches[0]  # sorted, so every caller picks the same one if duplicates exist
    return workspace.create_project(name, description="flywheel feature drift against the reference data")
