"""The monitor's checks: the fast path decides as Evidently's preset does, each check names what
moved, and unchanged data raises nothing."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from monitoring.checks import MonitorData, run_checks
from monitoring.drift import compute_drift
from monitoring.fast_drift import compute_column_drift_fast
from monitoring.model_drift import compute_embedding_drift, compute_prediction_drift
from monitoring.quality import compute_performance, compute_quality
from tests.unit.params_support import check_params, evidently_drift_params, model_drift_params, quality_params

NUMERICAL = ["a", "b", "c", "steps"]
CATEGORICAL = ["lang"]


def frame(rows: int, seed: int, shift: float = 0.0, steps=(0.5, 0.3, 0.2), langs=(0.5, 0.3, 0.2)) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"a": rng.normal(shift, 1, rows), "b": rng.lognormal(0, 0.5, rows), "c": rng.uniform(0, 1, rows),
                         "steps": rng.choice(3, rows, p=steps).astype(float),
                         "lang": np.array(["en", "de", "fr"])[rng.choice(3, rows, p=langs)]})


@pytest.mark.parametrize("current", [dict(seed=1), dict(seed=1, shift=0.3, steps=(0.2, 0.3, 0.5), langs=(0.2, 0.3, 0.5))])
def test_fast_path_decides_as_the_default_preset(current) -> None:
    reference, current = frame(3000, 0), frame(3000, **current)
    preset = compute_drift(reference, current, NUMERICAL, CATEGORICAL, evidently_drift_params()).per_column
    fast = compute_column_drift_fast(reference, current, NUMERICAL, CATEGORICAL)
    for column in NUMERICAL + CATEGORICAL:
        assert fast[column]["method"] == preset[column]["method"], column
        assert fast[column]["drifted"] == preset[column]["drifted"], column
        assert fast[column]["score"] == pytest.approx(preset[column]["score"], abs=1e-6), column


def test_fast_path_refuses_small_references_and_large_frames_use_it() -> None:
    with pytest.raises(ValueError, match="p-value tests"):
        compute_column_drift_fast(frame(500, 0), frame(500, 1), NUMERICAL, CATEGORICAL)
    params = evidently_drift_params(distance_methods=True, fast_path_rows=2000, report_rows=1000)
    result = compute_drift(frame(2500, 0), frame(2500, 1, shift=0.5), NUMERICAL, CATEGORICAL, params)
    assert result.drifted_columns == ["a"]
    assert (result.reference_rows, result.current_rows) == (2500, 2500)  # not the report's sample size


def test_small_frames_use_distances_so_unchanged_columns_do_not_flicker() -> None:
    params = evidently_drift_params(distance_methods=True, noise_sigmas=2.0)
    for seed in range(1, 4):
        result = compute_drift(frame(400, 0), frame(300, seed), NUMERICAL, CATEGORICAL, params)
        assert result.drifted_columns == [], result.per_column
        assert {e["method"] for e in result.per_column.values()} == {"wasserstein", "jensenshannon"}


def test_embedding_and_prediction_drift() -> None:
    rng = np.random.default_rng(0)
    params = model_drift_params()
    reference = rng.normal(size=(600, 16))
    assert not compute_embedding_drift(reference, rng.normal(size=(300, 16)), params).drifted
    shifted = compute_embedding_drift(reference, rng.normal(size=(300, 16)) + 0.5, params)
    assert shifted.drifted and shifted.score > params.embedding_threshold
    classes = rng.integers(0, 10, 600)
    assert not compute_prediction_drift(classes, rng.integers(0, 10, 300), params).drifted
    skewed = rng.choice(10, 300, p=[0.3, 0.3] + [0.05] * 8)
    assert compute_prediction_drift(classes, skewed, params).drifted


def test_quality_and_performance() -> None:
    reference, current = frame(600, 0), frame(300, 1)
    current.loc[:99, "b"] = 1000.0  # a third out of the reference's range
    current.loc[:99, "lang"] = None  # a third missing
    quality = compute_quality(reference, current, NUMERICAL, CATEGORICAL, quality_params())
    assert {c for c, e in quality.items() if e["drifted"]} == {"b", "lang"}
    assert quality["b"]["reasons"] == ["out_of_range"] and quality["lang"]["reasons"] == ["missing"]
    params = quality_params()
    ref_correct = (np.arange(200) % 10 != 0).astype(float)  # 90 %
    assert compute_performance(ref_correct, (np.arange(60) % 2 == 0).astype(float), params)["drifted"]  # 50 %
    assert not compute_performance(ref_correct, (np.arange(60) % 10 != 0).astype(float), params)["drifted"]
    assert not compute_performance(ref_correct, np.zeros(5), params)["judged"]  # too few labels


def test_result_names_check_and_item_and_skips_what_is_missing() -> None:
    rng = np.random.default_rng(0)
    reference = MonitorData(features=frame(600, 0), embeddings={"audio": rng.normal(size=(600, 8))},
                            predictions={"audio": rng.integers(0, 10, 600)})
    current = MonitorData(features=frame(300, 1, langs=(0.1, 0.1, 0.8)), embeddings={"audio": rng.normal(size=(300, 8)) + 1},
                          predictions={"audio": rng.integers(0, 10, 300)})
    result = run_checks(reference, current, NUMERICAL, CATEGORICAL, check_params())
    assert result.drift_detected
    assert result.drifted_checks == ["data_drift", "embedding_drift"]
    assert result.findings == ["data_drift:lang", "embedding_drift:audio"]
    assert result.checks["performance"]["status"] == "skipped"
    clean = run_checks(reference, MonitorData(features=frame(300, 2), embeddings={"audio": rng.normal(size=(300, 8))},
                                              predictions={"audio": rng.integers(0, 10, 300)}),
                       NUMERICAL, CATEGORICAL, check_params())
    assert not clean.drift_detected and clean.findings == []
