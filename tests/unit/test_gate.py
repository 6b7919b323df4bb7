"""The gate's decision: value bounds always, change checks against a champion, explained per check."""

import pytest

from models.gate import MetricThreshold, decide

THRESHOLDS = {"acc": MetricThreshold(min=0.6, max_drop=0.02), "latency_ms": MetricThreshold(max=50.0)}


def test_first_model_is_judged_on_value_bounds_only():
    decision = decide({"acc": 0.7, "latency_ms": 10.0}, None, THRESHOLDS)
    assert decision.passed and {c.kind for c in decision.checks} == {"min", "max"}
    assert "first model" in decision.reason


def test_small_regression_within_tolerance_passes_and_a_larger_one_fails():
    champion = {"acc": 0.80, "latency_ms": 10.0}
    assert decide({"acc": 0.785, "latency_ms": 10.0}, champion, THRESHOLDS).passed
    rejected = decide({"acc": 0.77, "latency_ms": 10.0}, champion, THRESHOLDS)
    assert not rejected.passed
    [failed] = rejected.failed_checks()
    assert (failed.metric, failed.kind) == ("acc", "change")
    assert failed.bound == pytest.approx(0.78)
    assert "acc change" in rejected.reason


def test_value_bound_failures_are_named():
    decision = decide({"acc": 0.5, "latency_ms": 80.0}, None, THRESHOLDS)
    assert {(c.metric, c.kind) for c in decision.failed_checks()} == {("acc", "min"), ("latency_ms", "max")}


def test_missing_metric_and_empty_thresholds_are_configuration_errors():
    with pytest.raises(ValueError, match="was not evaluated"):
        decide({"latency_ms": 1.0}, None, THRESHOLDS)
    with pytest.raises(ValueError, match="at least one metric"):
        decide({"acc": 1.0}, None, {})
