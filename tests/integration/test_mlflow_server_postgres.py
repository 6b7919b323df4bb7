"""The lifecycle against a real `mlflow server` as the compose stack runs it (the session's server,
tests/integration/conftest.py): backend store on Postgres (postgresql+psycopg://), artifacts proxied by
the server (--serve-artifacts) into its --artifacts-destination (MinIO in the stack, a local folder
here). Two `flywheel run`s with only MLFLOW_TRACKING_URI set: the second model becomes @champion on the
server, and every artifact went through the server into its destination. Then the whole stack
configuration at once (MLflow server, Feast on Redis + Postgres, the lake remote on S3, the champion
lock as a Postgres advisory lock on the server's database).
"""

from __future__ import annotations

import json
import urllib.request

import pytest

from flows.pipeline import run_stages
from flows.settings import load_settings
from tests.integration.services import fresh_database, free_port, postgres_unreachable_reason, with_database

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif((reason := postgres_unreachable_reason()) is not None, reason=reason or "")]


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.loads(response.read())


def test_two_runs_with_only_the_tracking_uri_set_register_and_promote_through_the_server(
        mlflow_server, fast_params, demo_batch_factory, tmp_path, monkeypatch):
    """`flywheel run` with MLFLOW_TRACKING_URI=http://… and nothing else (issue 13: the gate refused to lock
    after training): the champion lock is the file lock under FLYWHEEL_HOME, and both runs promote."""
    from typer.testing import CliRunner

    from flows.cli import app

    url, _, artifacts = mlflow_server
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    for name in ("FLYWHEEL_REGISTRY_LOCK_URI", "PREFECT_API_URL"):
        monkeypatch.delenv(name, raising=False)
    home = tmp_path / "home"
    for seed in (11, 12):
        result = CliRunner().invoke(app, ["run", "--plain", "--source", str(demo_batch_factory(samples=80, seed=seed)),
                                          "--home", str(home), "--params", str(fast_params)])
        assert result.exit_code == 0, result.output

    settings = load_settings(home, fast_params)
    name = settings.params.registry.model_name
    alias = _get(f"{url}/api/2.0/mlflow/registered-models/alias?name={name}&alias=champion")["model_version"]
    tags = {tag["key"]: tag["value"] for tag in alias["tags"]}
    assert alias["version"] == "2" and tags["gate.passed"] == "true" and tags["promotion.replaced"] == "1"
    assert (home / "state" / "locks" / f"{name}.champion.lock").exists()  # the lock it chose: FLYWHEEL_HOME's
    assert not settings.paths.mlflow_db.exists()  # nothing fell back to the embedded SQLite store
    # Artifacts travelled through the server (mlflow-artifacts:/) into its destination, not onto this
    # client's disk, where no other client (API, worker) of the stack could read them.
    experiment = _get(f"{url}/api/2.0/mlflow/experiments/get-by-name?experiment_name=flywheel-lifecycle")["experiment"]
    assert experiment["artifact_location"].startswith("mlflow-artifacts:")
    assert not settings.paths.mlflow_artifacts.exists()
    assert any(path.name == "MLmodel" for path in artifacts.rglob("MLmodel"))


@pytest.fixture
def s3_remote(monkeypatch):
    """A local S3 endpoint (moto's server; MinIO in the stack) with the lake bucket, credentials in the env."""
    import s3fs
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    for name, value in (("AWS_ACCESS_KEY_ID", "stack-test"), ("AWS_SECRET_ACCESS_KEY", "stack-test-secret"),
                        ("AWS_DEFAULT_REGION", "us-east-1")):
        monkeypatch.setenv(name, value)
    endpoint = f"http://127.0.0.1:{port}"
    fs = s3fs.S3FileSystem(key="stack-test", secret="stack-test-secret", endpoint_url=endpoint, skip_instance_cache=True)
    fs.mkdir("flywheel-lake")
    try:
        yield endpoint, fs
    finally:
        server.stop()


def test_the_whole_lifecycle_on_the_stack_configuration(mlflow_server, s3_remote, fast_params, demo_batch_factory,
                                                        tmp_path, monkeypatch):
    """Every service the compose stack swaps in, at once, with the stack's environment variables only:
    MLflow server on Postgres with the advisory lock, Feast online store on Redis and registry on
    Postgres, the lake's DVC remote on S3. Two runs: the second is gated against the first's champion."""
    import redis
    import yaml

    from features.store import FeastServices, get_online_features
    from tests.integration.services import REDIS_URI, redis_unreachable_reason

    if (reason := redis_unreachable_reason()) is not None:
        pytest.skip(reason)
    url, lock_uri, _ = mlflow_server
    endpoint, s3 = s3_remote
    params = yaml.safe_load(fast_params.read_text())
    params["registry"]["model_name"] = "flywheel-stack-e2e"  # this server's other test owns the default name
    params_path = tmp_path / "params.yaml"
    params_path.write_text(yaml.safe_dump(params))
    online = redis.Redis.from_url(REDIS_URI)
    online.flushdb()
    with fresh_database("feast") as feast_db:
        registry_url = with_database(feast_db, feast_db.rsplit("/", 1)[1], "psycopg")
        for name, value in (("MLFLOW_TRACKING_URI", url), ("FLYWHEEL_REGISTRY_LOCK_URI", lock_uri),
                            ("FLYWHEEL_FEAST_ONLINE", REDIS_URI), ("FLYWHEEL_FEAST_REGISTRY", registry_url),
                            ("FLYWHEEL_LAKE_REMOTE", "s3://flywheel-lake/dvc"), ("FLYWHEEL_LAKE_ENDPOINT", endpoint)):
            monkeypatch.setenv(name, value)
        settings = load_settings(tmp_path / "home", params_path)
        try:
            first = run_stages(settings, demo_batch_factory(samples=80, seed=11))
            second = run_stages(settings, demo_batch_factory(samples=80, seed=12))
            assert first.error is None and second.error is None, (first.error, second.error)
            assert first.model["champion"] == "1" and second.gate["lineage"]["champion_version"] == "1"
            # Features and labels were materialized into Redis and are served from it.
            sample = json.loads(next(iter((demo_batch_factory(samples=80, seed=12) / "manifest.jsonl")
                                          .read_text().splitlines())))["sample_id"]
            served = get_online_features(settings.paths.feast, [sample], ["image_stats:img_mean", "labels:label"],
                                         FeastServices(REDIS_URI, registry_url))
            assert served["img_mean"].notna().all() and online.dbsize() > 0
            assert not (settings.paths.feast / "online_store.db").exists()
            # The lake's versions went to the S3 remote; the run summary names them.
            assert s3.find("flywheel-lake/dvc") and second.data_versions["inputs"].startswith("lake/inputs@")
        finally:
            online.flushdb()
