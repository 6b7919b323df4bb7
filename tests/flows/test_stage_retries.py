"""The Prefect driver retries a stage only on transient I/O (flows/lifecycle.py `worth_retrying`): a
register stage whose tracking server refused the connection is run again and succeeds; one that
failed on a bad parameter runs once and fails."""

from __future__ import annotations

import pytest
from prefect import flow

from flows.lifecycle import call_as_task
from tests.prefect_support import prefect_harness

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    with prefect_harness(tmp_path_factory):
        yield


def test_register_is_retried_on_a_refused_connection_and_not_on_a_bad_parameter(harness):
    attempts = {"flaky": 0, "bad": 0}

    def flaky_register(version: str) -> str:
        attempts["flaky"] += 1
        if attempts["flaky"] == 1:
            raise ConnectionRefusedError(111, "Connection refused")  # what a restarting server gives
        return version

    def bad_register(version: str) -> str:
        attempts["bad"] += 1
        raise ValueError(f"{version!r} is not a model version; expected digits")

    @flow(name="retry-check")
    def lifecycle(fn, version: str) -> str:
        return call_as_task("register", fn, version)

    assert lifecycle(flaky_register, "3") == "3" and attempts["flaky"] == 2
    with pytest.raises(ValueError, match="not a model version"):
        lifecycle(bad_register, "v?")
    assert attempts["bad"] == 1
