"""Retries on transient I/O only (features/transient.py), and registry writes that a retry cannot
duplicate (models/registry.py): the errors are the real ones the clients raise against a closed port."""

from __future__ import annotations

import logging
import socket
import time

import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException, RestException

from features.transient import is_transient, retry_transient
from models.registry import CHALLENGER, IncompleteModel, LoggedModel, Registry, register_candidate


@pytest.fixture
def closed_port(monkeypatch) -> int:
    """A local port nothing listens on: connections to it are refused at once."""
    # Waits of 1, 2, 4, 8 s scaled by 0.05: the schedule still runs and is logged, in a second not 15 s.
    monkeypatch.setenv("FLYWHEEL_RETRY_WAIT_SCALE", "0.05")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _raised(fn) -> BaseException:
    with pytest.raises(Exception) as info:
        fn()
    return info.value


def test_connection_failures_of_each_client_are_transient(closed_port, monkeypatch):
    import psycopg
    import requests

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # MLflow's own retries: none, to fail fast here
    url = f"http://127.0.0.1:{closed_port}"
    tracking_down = _raised(lambda: MlflowClient(url).search_experiments())
    assert isinstance(tracking_down, MlflowException) and is_transient(tracking_down)
    assert is_transient(_raised(lambda: requests.get(url, timeout=5)))
    assert is_transient(_raised(lambda: psycopg.connect(f"postgresql://postgres@127.0.0.1:{closed_port}/x", connect_timeout=3)))
    assert is_transient(RestException({"error_code": "TEMPORARILY_UNAVAILABLE", "message": "server restarting"}))
    assert is_transient(ConnectionResetError(104, "Connection reset by peer"))
    import redis

    online_down = _raised(lambda: redis.Redis(port=closed_port, socket_connect_timeout=2).ping())
    assert isinstance(online_down, redis.RedisError) and is_transient(online_down)  # Feast's Redis online store


def test_deterministic_failures_are_not_transient():
    from botocore.exceptions import ClientError, EndpointConnectionError
    from dvc.exceptions import UploadError

    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

    from features.records import BatchError

    assert not is_transient(ValueError("shard_rows must be at least 1, got 0"))
    assert not is_transient(BatchError("manifest.jsonl is missing"))
    assert not is_transient(RestException({"error_code": "INVALID_PARAMETER_VALUE", "message": "bad alias"}))
    assert not is_transient(MlflowException("Registered model alias champion not found.", error_code=INVALID_PARAMETER_VALUE))
    assert not is_transient(MlflowException("Model version 7 does not exist"))  # default code INTERNAL_ERROR: judged by message
    assert not is_transient(ClientError({"Error": {"Code": "NoSuchBucket"}}, "GetObject"))
    # …and the object store's transient ones are
    assert is_transient(EndpointConnectionError(endpoint_url="http://minio:9000"))
    assert is_transient(ClientError({"Error": {"Code": "SlowDown"}}, "PutObject"))
    assert is_transient(UploadError(3))  # the lake push: only copies what the remote lacks, safe to repeat

    def wrapped(suppress: bool) -> BaseException:
        try:
            raise ConnectionRefusedError(111, "Connection refused")
        except ConnectionRefusedError as err:
            try:
                raise BatchError("cannot read manifest.jsonl") from (None if suppress else err)
            except BatchError as outer:
                return outer

    assert is_transient(wrapped(suppress=False))  # raised from a refused connection: worth another try
    assert not is_transient(wrapped(suppress=True))  # `from None`: the connection error is not its cause


def test_a_transient_failure_is_retried_and_logged_a_deterministic_one_is_not(caplog):
    calls = []

    @retry_transient("push the lake", first_wait_s=0.05)
    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionRefusedError(111, "Connection refused")
        return "pushed"

    with caplog.at_level(logging.WARNING, logger="flywheel.retry"):
        assert flaky() == "pushed"
    assert len(calls) == 3
    retries = [r.getMessage() for r in caplog.records if r.name == "flywheel.retry"]
    assert len(retries) == 2 and all("push the lake failed on attempt" in m and "ConnectionRefusedError" in m for m in retries)

    bad = []

    @retry_transient("validate", first_wait_s=0.05)
    def invalid() -> None:
        bad.append(1)
        raise ValueError("min_rows must be positive")

    with pytest.raises(ValueError):
        invalid()
    assert len(bad) == 1

    @retry_transient("reach the server", attempts=3, first_wait_s=0.05)
    def down() -> None:
        raise ConnectionRefusedError(111, "Connection refused")

    with pytest.raises(ConnectionRefusedError):
        down()  # the last transient error comes out as it was, after 3 attempts


def test_an_unreachable_registry_is_not_read_as_no_champion(closed_port, monkeypatch):
    """Before: any MlflowException read as "alias unset", so a server outage looked like "no champion"
    and a gate could judge a challenger against nothing. Now the outage raises (after its retries)."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    registry = Registry(f"http://127.0.0.1:{closed_port}", "flywheel-imagebind")
    with pytest.raises(MlflowException, match="Connection refused|Max retries"):
        registry.alias_version("champion")


@pytest.fixture
def sqlite_registry(tmp_path) -> Registry:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    return Registry(uri, "retry-test", artifact_root=tmp_path / "artifacts")


def _logged_model(registry: Registry, status: str) -> LoggedModel:
    """A logged model of a real run on the store, finalized with `status` (READY once its artifacts are uploaded)."""
    client = registry.client()
    run = client.create_run(registry.experiment_id())
    model = client.create_logged_model(registry.experiment_id(), source_run_id=run.info.run_id)
    client.finalize_logged_model(model.model_id, status)
    return LoggedModel(run.info.run_id, f"models:/{model.model_id}")


def test_registering_a_run_again_returns_its_version_instead_of_a_second_one(sqlite_registry):
    logged = _logged_model(sqlite_registry, "READY")
    first = register_candidate(sqlite_registry, logged, {"training_run": logged.run_id})
    again = register_candidate(sqlite_registry, logged, {"training_run": logged.run_id})  # a retry, a resumed run
    client = sqlite_registry.client()
    assert first == again == "1"
    assert len(client.search_model_versions(f"name='{sqlite_registry.model_name}'")) == 1
    assert sqlite_registry.alias_version(CHALLENGER) == "1"
    other = register_candidate(sqlite_registry, _logged_model(sqlite_registry, "READY"), {})
    assert other == "2" and sqlite_registry.alias_version(CHALLENGER) == "2"


def test_a_model_whose_artifacts_are_incomplete_is_not_registered(sqlite_registry):
    failed = _logged_model(sqlite_registry, "FAILED")  # log_model marks a model FAILED when its upload broke
    with pytest.raises(IncompleteModel, match="not READY"):
        register_candidate(sqlite_registry, failed, {})
    assert sqlite_registry.client().search_model_versions(f"name='{sqlite_registry.model_name}'") == []
    assert sqlite_registry.alias_version(CHALLENGER) is None


def test_an_unreachable_object_store_is_retried_then_the_ingest_fails_clearly(closed_port, tmp_path, caplog):
    """An s3:// landing batch whose endpoint refuses connections: the download is tried again with
    backoff (each time into a fresh landing folder), then BatchError names the batch; nothing is ingested."""
    from features.ingest import ingest_batch, list_ingested_batches
    from features.records import BatchError

    options = {"endpoint_url": f"http://127.0.0.1:{closed_port}", "key": "k", "secret": "s",
               "config_kwargs": {"retries": {"max_attempts": 1}}}  # botocore's own retries off: ours are tested
    with caplog.at_level(logging.WARNING, logger="flywheel.retry"), pytest.raises(BatchError, match="s3://landing/b1"):
        ingest_batch("s3://landing/b1", tmp_path / "raw", options)
    retries = [r.getMessage() for r in caplog.records if r.name == "flywheel.retry"]
    assert len(retries) == 4 and all("copy a landing batch from its object store" in m for m in retries)
    assert list_ingested_batches(tmp_path / "raw") == [] and not list((tmp_path / "raw").iterdir())


def test_a_server_killed_mid_response_is_transient():
    """What MLflow's client raised in the outage test when the server died while answering a POST
    (urllib3 does not retry reads of a non-idempotent request): the epoch's metrics are sent again."""
    from mlflow.exceptions import MlflowException

    from features.transient import is_transient

    err = MlflowException("API request to http://127.0.0.1:40399/api/2.0/mlflow/runs/log-batch failed with exception "
                          "('Connection broken: IncompleteRead(0 bytes read, 2 more expected)', "
                          "IncompleteRead(0 bytes read, 2 more expected))")
    assert is_transient(err)


def test_the_wait_scale_shortens_every_backoff_and_a_bad_value_is_named(monkeypatch):
    from features.transient import retry_transient

    calls: list[float] = []

    @retry_transient("flaky call", attempts=3, first_wait_s=1.0)
    def flaky() -> str:
        calls.append(time.perf_counter())
        if len(calls) < 3:
            raise ConnectionRefusedError("refused")
        return "ok"

    monkeypatch.setenv("FLYWHEEL_RETRY_WAIT_SCALE", "0.01")
    assert flaky() == "ok" and len(calls) == 3
    assert calls[-1] - calls[0] < 1.0  # unscaled, the two waits are at least 1 + 2 s
    monkeypatch.setenv("FLYWHEEL_RETRY_WAIT_SCALE", "soon")
    calls.clear()
    with pytest.raises(ValueError, match="FLYWHEEL_RETRY_WAIT_SCALE='soon'"):
        flaky()
