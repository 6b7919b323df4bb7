"""Drift verdicts on synthetic frames, and runs accumulating in one workspace project."""

import os

os.environ.setdefault("DO_NOT_TRACK", "1")  # before Evidently is imported: no usage reporting

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from evidently.ui.workspace import Workspace

from monitoring.drift import compute_drift
from monitoring.workspace import save_drift
from tests.unit.params_support import evidently_drift_params

EVIDENTLY = evidently_drift_params()  # drift as Evidently alone judges it

NUMERICAL = ["audio_seconds", "audio_peak", "image_contrast", "caption_chars", "image_width"]
CATEGORICAL = ["language"]


def make_features(rows: int, seed: int, shifted: tuple[str, ...] = (), languages: tuple[str, ...] = ("en", "de")) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {column: rng.normal(0.0, 1.0, rows) + (2.0 if column in shifted else 0.0) for column in NUMERICAL}
    )
    frame["language"] = rng.choice(languages, rows)
    return frame


def test_same_distribution_has_no_drift() -> None:
    result = compute_drift(make_features(300, 0), make_features(300, 1), NUMERICAL, CATEGORICAL, EVIDENTLY)

    assert not result.drift_detected
    assert result.drifted_columns == []
    assert result.drifted_share == 0.0
    assert set(result.per_column) == set(NUMERICAL + CATEGORICAL)
    assert (result.reference_rows, result.current_rows) == (300, 300)


def test_shifted_mean_on_three_of_five_columns_is_dataset_drift() -> None:
    shifted = ("audio_seconds", "image_contrast", "caption_chars")
    result = compute_drift(
        make_features(300, 0), make_features(300, 1, shifted=shifted), NUMERICAL, CATEGORICAL, EVIDENTLY
    )

    assert result.drift_detected
    assert result.drifted_columns == list(shifted)
    assert result.drifted_share == pytest.approx(3 / 6)  # 0.5 is "at least drift_share": drift


# Languages absent from the reference give chi-square zero expected counts: scipy warns, p = 0.
@pytest.mark.filterwarnings("ignore:divide by zero:RuntimeWarning")
def test_categorical_shift_is_detected() -> None:
    current = make_features(300, 1, languages=("fr", "es"))
    result = compute_drift(make_features(300, 0), current, NUMERICAL, CATEGORICAL, EVIDENTLY)

    assert result.drifted_columns == ["language"]
    assert not result.drift_detected  # 1 of 6 columns is below drift_share


@pytest.mark.parametrize(
    ("rows", "pvalue_regime"),
    [(300, True), (1_500, False)],  # Evidently switches to distances above 1,000 reference rows
)
def test_column_verdict_follows_the_direction_of_the_method(rows: int, pvalue_regime: bool) -> None:
    shifted = ("audio_seconds",)
    result = compute_drift(
        make_features(rows, 0), make_features(rows, 1, shifted=shifted), NUMERICAL, CATEGORICAL, EVIDENTLY
    )

    assert result.drifted_columns == ["audio_seconds"]
    for column, entry in result.per_column.items():
        assert ("p_value" in entry["method"]) == pvalue_regime, entry["method"]
        beyond = entry["score"] < entry["threshold"] if pvalue_regime else entry["score"] >= entry["threshold"]
        assert entry["drifted"] == beyond, (column, entry)


def test_missing_column_or_empty_frame_raises() -> None:
    reference, current = make_features(50, 0), make_features(50, 1)
    with pytest.raises(ValueError, match=r"current frame lacks columns \['audio_seconds'\]"):
        compute_drift(reference, current.drop(columns="audio_seconds"), NUMERICAL, CATEGORICAL, EVIDENTLY)
    with pytest.raises(ValueError, match="reference frame is empty"):
        compute_drift(reference.iloc[:0], current, NUMERICAL, CATEGORICAL, EVIDENTLY)


def test_saving_twice_gives_one_project_with_two_runs(tmp_path: Path) -> None:
    result = compute_drift(make_features(300, 0), make_features(300, 1), NUMERICAL, CATEGORICAL, EVIDENTLY)
    html_path = tmp_path / "reports" / "drift.html"

    first = save_drift(tmp_path / "ws", "flywheel", result, ("a", "b"), html_path=html_path)
    second = save_drift(tmp_path / "ws", "flywheel", result, ("a", "b"))

    workspace = Workspace(str(tmp_path / "ws"))
    (project,) = workspace.list_projects()
    assert project.name == "flywheel"
    assert sorted(map(str, workspace.list_runs(project.id))) == sorted([first, second])
    assert html_path.stat().st_size > 100_000  # the self-contained report, scripts inlined
