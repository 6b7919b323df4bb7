"""Schemathesis fuzzes every operation of the API's own OpenAPI spec: no input makes it answer 5xx,
and every response matches the spec (status codes, content type, body schema)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from models.serving.app import create_app
from models.serving.holder import ModelHolder, ServingKey
from models.serving.inference_log import InferenceLog
from tests.unit.test_serving import LIMITS, MAX_BODY

EXAMPLES_PER_OPERATION = 60  # 8 operations × 60 examples: about 15 s on 2 cores


def _load(key: ServingKey):
    from tests.unit.serving_support import demo_inputs, served_model

    return served_model(0, key.version, demo_inputs())


# Built at import, cheaply: the holder loads its model only when the fixture below starts it.
# (schemathesis.pytest.from_fixture would be neater but fails on pytest 9: it sets Function._nodeid.)
HOLDER = ModelHolder(lambda: ServingKey("1"), _load, poll_seconds=60)
LOG = InferenceLog(Path(tempfile.mkdtemp(prefix="serving-fuzz-")), "api")
APP = create_app(HOLDER, LOG, LIMITS, MAX_BODY)
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)


@pytest.fixture(scope="module", autouse=True)
def loaded_model():
    HOLDER.start()
    yield
    HOLDER.stop()
    LOG.close()
    shutil.rmtree(LOG.folder, ignore_errors=True)


@schema.parametrize()
@settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.function_scoped_fixture])
def test_no_input_gets_a_server_error(case):
    case.call_and_validate(excluded_checks=[positive_data_acceptance])
