"""One run id everywhere, on a real lifecycle state: a plain run makes v1, a Prefect-driven run makes v2 (gated
against v1), a plain `flywheel ingest` checks a third batch for drift against v2. The Prefect flow run is named
after the run id; the MLflow runs, GX result and Evidently snapshot carry it; the UIs link to each other; and
`flywheel lineage` prints the whole chain, with hyperlinks in a terminal."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
from mlflow import MlflowClient
from rich.console import Console
from typer.testing import CliRunner

from flows.cli import app
from flows.lineage import LINEAGE_STEPS, read_lineage
from flows.run_links import DATA_DOCS_UI
from flows.settings import load_settings
from tests.conftest import frequent_system_metrics, write_fast_lifecycle_params
from tests.prefect_support import prefect_harness
from tests.flows.lineage_browser import (  # noqa: F401 (the browser test and its fixture, on this module's state)
    browser,
    test_a_user_follows_one_run_by_links_from_prefect_through_mlflow_data_docs_and_evidently_back_to_prefect,
)

pytestmark = pytest.mark.slow
runner = CliRunner()


def _invoke(*args: str):
    return runner.invoke(app, list(args), env={"COLUMNS": "250"})


def _summary(settings, run_id: str) -> dict:
    return json.loads((settings.paths.runs / run_id / "summary.json").read_text())


def _local(url: str) -> Path:
    assert url.startswith("file://"), url
    return Path(unquote(urlparse(url).path))


def _data_docs_page(settings, url: str) -> Path:
    """The file behind a Data Docs link: its site, as `flywheel ui` serves it over http."""
    assert url.startswith(DATA_DOCS_UI + "/"), url
    return settings.paths.gx / "uncommitted" / "data_docs" / "local_site" / unquote(urlparse(url).path).lstrip("/")


@pytest.fixture(scope="module")
def prefect_api(tmp_path_factory):
    """Prefect's test API, also in the environment, so the CLI's Prefect driver uses it."""
    from prefect.settings import PREFECT_API_URL

    with prefect_harness(tmp_path_factory), pytest.MonkeyPatch.context() as env:
        env.setenv("PREFECT_API_URL", PREFECT_API_URL.value())
        yield PREFECT_API_URL.value()


@pytest.fixture(scope="module")
def state(prefect_api, demo_batch_factory, small_golden_batch, tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    params = write_fast_lifecycle_params(tmp_path_factory.mktemp("params") / "params.yaml", golden=small_golden_batch)
    options = ("--home", str(home), "--params", str(params))
    settings = load_settings(home, params)
    ids = []
    with frequent_system_metrics():
        for driver, command, seed in ((["--plain"], "run", 11), ([], "run", 12), (["--plain"], "ingest", 13)):
            result = _invoke(command, *driver, "--source", str(demo_batch_factory(samples=80, seed=seed)), *options)
            assert result.exit_code == 0, result.output
            ids.append(max(settings.paths.runs.glob("*/summary.json"), key=lambda p: p.stat().st_mtime).parent.name)
    first, second, third = (_summary(settings, run_id) for run_id in ids)
    assert (first["model"]["version"], second["model"]["version"]) == ("1", "2") and not third["model"]
    return settings, options, first, second, third


def test_the_prefect_flow_run_is_named_after_the_run_id_and_tagged_with_it_and_the_home(state):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName

    settings, _, _, second, _ = state
    with get_client(sync_client=True) as client:
        (flow_run,) = client.read_flow_runs(flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[second["run_id"]])))
    assert {f"run:{second['run_id']}", f"home:{settings.paths.home}", "flywheel"} <= set(flow_run.tags)
    assert second["links"]["prefect_flow_run"].endswith(f"/flow-runs/flow-run/{flow_run.id}")


def test_the_gate_artifact_links_the_mlflow_model_version_and_the_drift_artifact_the_evidently_snapshot(state):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    settings, _, _, second, _ = state
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["gate-decision"])))
    (artifact,) = artifacts  # the plain runs publish none
    assert f"#/models/{settings.params.registry.model_name}/versions/2)" in artifact.data
    assert second["run_id"] in artifact.data
    with get_client(sync_client=True) as client:
        (drift,) = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["drift-report"])))
    monitor = second["monitor"]  # the drift artifact links the snapshot's page in evidently ui
    assert f"[`{monitor['evidently_snapshot']}`](http://127.0.0.1:8000/projects/{monitor['evidently_project_id']}/reports/" in drift.data


def test_the_mlflow_runs_carry_the_run_id_and_link_the_flow_run_the_data_docs_page_and_the_drift_report(state):
    settings, _, first, second, _ = state
    client = MlflowClient(settings.tracking_uri)
    training = client.get_run(second["train"]["mlflow_run_id"]).data.tags
    drift = client.get_run(second["monitor"]["mlflow_run"]).data.tags
    for tags in (training, drift):
        assert tags["flywheel.run_id"] == second["run_id"]
        assert tags["links.prefect_flow_run"] == second["links"]["prefect_flow_run"]
        page = _data_docs_page(settings, tags["links.data_docs"])
        assert page.is_file() and second["run_id"] in page.parts and page.name != "index.html"
        assert _local(tags["links.drift_report"]) == Path(second["monitor"]["report"]) and Path(second["monitor"]["report"]).is_file()
        project, snapshot = second["monitor"]["evidently_project_id"], second["monitor"]["evidently_snapshot"]
        assert tags["links.evidently_snapshot"] == f"http://127.0.0.1:8000/projects/{project}/reports/{snapshot}"
        assert (settings.paths.evidently / project / "snapshots" / f"{snapshot}.json").is_file()
    plain = client.get_run(first["train"]["mlflow_run_id"]).data.tags
    assert plain["flywheel.run_id"] == first["run_id"] and "links.prefect_flow_run" not in plain  # --plain: no flow run
    assert first["run_id"] in _data_docs_page(settings, plain["links.data_docs"]).parts


def test_the_gx_result_and_the_evidently_snapshot_carry_the_run_id_and_the_model_version(state):
    settings, _, _, second, third = state
    stored = list(settings.paths.gx.rglob(f"validations/clean_rows/{second['run_id']}/*/*.json"))
    assert len(stored) == 1 and json.loads(stored[0].read_text())["meta"]["run_id"]["run_name"] == second["run_id"]
    for summary in (second, third):  # a lifecycle run's check and a later ingest's, both against v2
        (snapshot,) = settings.paths.evidently.glob(f"*/snapshots/{summary['monitor']['evidently_snapshot']}.json")
        saved = json.loads(snapshot.read_text())
        assert {f"run:{summary['run_id']}", "model_version:2",
                f"model:{settings.params.registry.model_name}"} <= set(saved["tags"])
        assert saved["metadata"]["run"] == summary["run_id"] and saved["metadata"]["model_version"] == "2"


def test_lineage_of_a_version_and_of_the_run_that_made_it_print_the_same_whole_chain(state):
    settings, options, _, second, third = state
    by_version, by_run = _invoke("lineage", "2", *options), _invoke("lineage", second["run_id"], *options)
    assert by_version.exit_code == 0, by_version.output
    assert by_version.output == by_run.output
    flat = re.sub(r"\s+", " ", by_version.output)
    positions = [flat.find(step) for step in LINEAGE_STEPS]
    assert -1 not in positions and positions == sorted(positions), positions  # every step, in the chain's order
    for shown in (second["run_id"], second["train"]["mlflow_run_id"], second["data_versions"]["inputs"],
                  f"{settings.params.registry.model_name} v2", "PASSED against champion v1",
                  second["links"]["prefect_flow_run"], f"batch {third['batch_id']}", f"batch {second['batch_id']}"):
        assert shown in flat, shown


def test_lineage_of_a_plain_run_says_it_has_no_flow_run_and_an_unknown_key_exits_2(state):
    settings, options, first, _, _ = state
    lineage = read_lineage(settings, first["run_id"])
    (prefect,) = lineage.of("Prefect flow run")
    assert prefect.url is None and "--plain" in prefect.detail
    (version,) = lineage.of("model version")
    assert "v1" in version.value and "@previous" in version.value
    unknown = _invoke("lineage", "v99", *options)
    assert unknown.exit_code == 2 and "v99" in unknown.output


def test_lineage_steps_are_hyperlinks_in_a_terminal_and_plain_text_elsewhere(state):
    from flows.cli_lineage import print_lineage

    settings, _, _, second, _ = state
    lineage = read_lineage(settings, "2")
    (mlflow_run,) = lineage.of("MLflow run")
    terminal, piped = io.StringIO(), io.StringIO()
    print_lineage(lineage, Console(file=terminal, force_terminal=True, width=200))
    print_lineage(lineage, Console(file=piped, force_terminal=False, width=200))
    assert f"\x1b]8;" in terminal.getvalue() and mlflow_run.url in terminal.getvalue()  # OSC 8
    assert "\x1b" not in piped.getvalue() and mlflow_run.url in piped.getvalue()  # the address, spelt out


def test_the_model_card_links_the_prefect_flow_run_and_names_the_data_docs_page_of_its_run(state):
    settings, _, first, second, _ = state
    client = MlflowClient(settings.tracking_uri)
    card = client.get_model_version(settings.params.registry.model_name, "2").description
    assert f"- flywheel run: `{second['run_id']}` ([Prefect flow run]({second['links']['prefect_flow_run']}))" in card
    assert f"(Data Docs page): `{second['stages']['validate']['data_docs_page']}`" in card
    plain = client.get_model_version(settings.params.registry.model_name, "1").description
    assert f"- flywheel run: `{first['run_id']}`; `flywheel lineage {first['run_id']}`" in plain  # --plain: no flow run
