"""The documentation: the mkdocs site builds with every link resolving, and what the pages tell a user to
write is accepted by the code."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from features.task import Task, build_prompts
from flows.settings import Params

PROJECT = Path(__file__).resolve().parents[2]
MKDOCS = Path(sys.executable).with_name("mkdocs")  # a dev dependency (pyproject.toml), installed with the project
YAML_BLOCK = re.compile(r"```yaml\n(.*?)```", re.S)


def build_site(project: Path, site: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(MKDOCS), "build", "--strict", "--site-dir", str(site)], cwd=project,
                          capture_output=True, text=True, timeout=300)


def test_the_site_builds_strictly_with_every_page_of_the_nav(tmp_path):
    built = build_site(PROJECT, tmp_path / "site")
    assert built.returncode == 0, built.stderr[-4000:]
    nav = yaml.safe_load((PROJECT / "mkdocs.yml").read_text())["nav"]

    def pages(entries) -> list[str]:
        out = []
        for entry in entries:
            for value in entry.values():
                out.extend(pages(value) if isinstance(value, list) else [value])
        return out

    listed = pages(nav)
    assert {"index.md", "tutorial.md", "reference/configuration.md"} <= set(listed)
    for page in listed:
        html = tmp_path / "site" / ("index.html" if page == "index.md" else page.removesuffix(".md") + "/index.html")
        assert html.is_file(), f"{page} is in the nav but was not built"
    unlisted = {str(p.relative_to(PROJECT / "docs")) for p in (PROJECT / "docs").rglob("*.md")} - set(listed)
    assert not unlisted, f"pages missing from mkdocs.yml's nav: {sorted(unlisted)}"


def test_a_broken_link_fails_the_build(tmp_path):
    copy = tmp_path / "project"
    shutil.copytree(PROJECT / "docs", copy / "docs")
    shutil.copy(PROJECT / "mkdocs.yml", copy / "mkdocs.yml")
    with (copy / "docs" / "tutorial.md").open("a") as page:
        page.write("\nSee [the old page](reference/no-such-page.md).\n")
    built = build_site(copy, tmp_path / "site")
    assert built.returncode != 0
    assert "no-such-page.md" in built.stderr


def test_the_readme_stays_short_and_links_to_pages_that_exist():
    readme = (PROJECT / "README.md").read_text()
    assert len(readme.splitlines()) <= 80, "the README is the front page; the long form lives in docs/"
    assert "make run" in readme and "make test" in readme
    links = re.findall(r"\]\((docs/[^)#]+)", readme)
    assert "docs/tutorial.md" in links
    missing = [link for link in links if not (PROJECT / link).is_file()]
    assert not missing, f"README links to missing pages: {missing}"


def test_every_task_section_the_docs_show_is_a_valid_task():
    shown = []
    for page in sorted((PROJECT / "docs").rglob("*.md")):
        for block in YAML_BLOCK.findall(page.read_text()):
            parsed = yaml.safe_load(block)
            if isinstance(parsed, dict) and "task" in parsed:
                shown.append((page.name, parsed["task"]))
    assert len(shown) >= 2, "the tutorial and the configuration page each show a task section"
    for page, task in shown:
        params = Params.model_validate({"task": task})
        classes = tuple(str(c) for c in params.task.classes)
        built = Task(classes=classes, prompts=build_prompts(classes, params.task.prompts),
                     slices=params.task.slices, languages=params.task.languages,
                     image_channels=params.task.image_channels)
        assert built.n_classes >= 2, page
