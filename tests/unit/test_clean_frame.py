"""The clean-rows table in flight holds its text in Arrow buffers (issue 17's memory); what the stages
compute from it, and what user code receives, is what the object-string table gave."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest

from features.clean import ROWS_NAME, clean_batch, rows_as_objects
from features.ingest import ingest_batch
from features.label import build_votes
from features.label_functions import LabellingFunction
from features.transform import STATS_FILE, compute_sample_features
from features.validate import validate_rows
from flows.data_stages import load_clean_rows
from tests.unit.params_support import clean_params, validate_params
from tests.unit.task_support import DIGITS

STRIPPED = "no-caption"  # a row without caption and language
SILENT = "no-audio"  # a row without audio
LONG = "long-caption"  # a row whose caption is too long for validation


@pytest.fixture(scope="module")
def cleaned(demo_batch_factory, tmp_path_factory):
    """A demo batch plus rows missing a caption and language, missing audio, and one validation fails."""
    work = tmp_path_factory.mktemp("clean-frame")
    source = work / "landing"
    shutil.copytree(demo_batch_factory(samples=40, seed=5, fault_rate=0.0), source)
    rows = [json.loads(line) for line in (source / "manifest.jsonl").read_text().splitlines()]
    stripped = {k: v for k, v in rows[0].items() if k not in ("caption", "language")} | {"sample_id": STRIPPED}
    silent = {k: v for k, v in rows[1].items() if k != "audio"} | {"sample_id": SILENT}
    long = rows[2] | {"sample_id": LONG, "caption": "seven " * 200}
    (source / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [*rows, stripped, silent, long]))
    ingested = ingest_batch(source, work / "raw")
    return clean_batch(ingested.batch_dir, work / "clean", clean_params(DIGITS)), ingested.batch_id, work


def _row(frame: pd.DataFrame, sample_id: str) -> pd.Series:
    return frame.loc[frame["sample_id"] == sample_id].iloc[0]


def test_clean_rows_keep_their_values_and_missing_text_is_none_as_objects(cleaned):
    result, _, _ = cleaned
    text = ("sample_id", "caption", "language", "source", "meta", "image", "image_dhash", "audio")
    assert all(isinstance(result.rows[column].dtype, pd.ArrowDtype) for column in text)
    # the demo has no sensors: Parquet stores those columns as its null type, and they arrive as Arrow-backed
    # text, missing throughout, not as a Python None a row
    for column in ("depth", "thermal", "imu"):
        assert result.rows[column].dtype == pd.ArrowDtype(pa.string()) and result.rows[column].isna().all()
    assert pd.isna(_row(result.rows, STRIPPED)["caption"]) and pd.isna(_row(result.rows, SILENT)["audio"])
    objects = rows_as_objects(result.rows)
    # the values pandas reads from rows.parquet, with its dtypes: None for a missing text value
    pd.testing.assert_frame_equal(objects, pd.read_parquet(result.batch_dir / ROWS_NAME), check_exact=True)
    assert _row(objects, STRIPPED)["caption"] is None and _row(objects, STRIPPED)["language"] is None
    assert _row(objects, SILENT)["audio"] is None
    assert isinstance(result.rows["caption"].dtype, pd.ArrowDtype)  # the input is left as it was
    # a cached clean stage reloads the same table the stage returned
    pd.testing.assert_frame_equal(load_clean_rows(result.batch_dir), result.rows, check_exact=True)


def test_labelling_functions_see_none_for_a_missing_field(cleaned):
    result, _, _ = cleaned
    seen: dict[str, dict] = {}

    def record(row):
        seen[row["sample_id"]] = row
        return None

    lf = LabellingFunction("record", "tests:record", record)
    for rows in (result.rows, rows_as_objects(result.rows)):  # the stage in flight, and as the label stage has it
        seen.clear()
        build_votes(rows, DIGITS, functions=[lf])
        assert seen[STRIPPED]["caption"] is None and seen[STRIPPED]["language"] is None
        assert seen[SILENT]["audio"] is None
        assert not any(value is pd.NA for row in seen.values() for value in row.values())
        assert all(isinstance(row["caption"], str) for sid, row in seen.items() if sid != STRIPPED)


def test_features_from_arrow_rows_are_those_of_object_rows(cleaned):
    result, batch_id, _ = cleaned
    objects = rows_as_objects(result.rows)
    features = compute_sample_features(result.batch_dir, result.rows, batch_id)
    pd.testing.assert_frame_equal(features, compute_sample_features(result.batch_dir, objects, batch_id), check_exact=True)
    assert _row(features, STRIPPED)["language"] is None and _row(features, STRIPPED)["cap_script"] is None
    assert pd.isna(_row(features, SILENT)["aud_pitch_hz"]) and not pd.isna(_row(features, SILENT)["img_mean"])
    # a folder cleaned before statistics were kept: every file read back, from rows of either kind
    stats = result.batch_dir / STATS_FILE
    stats.rename(stats.with_suffix(".off"))
    try:
        read_back = compute_sample_features(result.batch_dir, result.rows, batch_id)
        pd.testing.assert_frame_equal(read_back, compute_sample_features(result.batch_dir, objects, batch_id), check_exact=True)
    finally:
        stats.with_suffix(".off").rename(stats)
    assert _row(read_back, STRIPPED)["language"] is None


def test_validation_judges_arrow_rows_as_it_judges_object_rows(cleaned):
    result, batch_id, work = cleaned
    params = validate_params(languages=("en", "de", "fr", "es"))
    arrow = validate_rows(result.rows, work / "gx-arrow", params, batch_id)
    objects = validate_rows(rows_as_objects(result.rows), work / "gx-objects", params, batch_id)
    assert arrow.failed == objects.failed == {LONG: ["expect_column_values_to_be_between(caption_chars)"]}
    assert arrow.statistics == objects.statistics
