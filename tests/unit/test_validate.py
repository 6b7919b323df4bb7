"""The GX suites: schema, row-level failures and batch-level rejection of the clean rows (also against
the reference of earlier batches), and the feature table's suite."""

import os

os.environ.setdefault("DO_NOT_TRACK", "1")

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from PIL import Image

from features.clean import CLEAN_COLUMNS
from features.transform import compute_sample_features
from features.validate import BatchRejected, build_reference_profile, validate_features, validate_rows
from tests.unit.params_support import validate_params

PARAMS = validate_params(n_classes=10, languages=("en", "de", "fr", "es"))  # the digits example's task


def make_clean_rows(rows: int = 40, seed: int = 0, prefix: str = "s") -> pd.DataFrame:
    """A table with the clean stage's schema that meets every expectation, the optional columns partly null."""
    rng = np.random.default_rng(seed)
    has_image = np.arange(rows) % 3 != 0
    has_audio = np.arange(rows) % 4 != 0
    captions = [None if i % 5 == 0 else f"the digit {i % 10}" for i in range(rows)]
    ids = [f"{prefix}{i:04d}" for i in range(rows)]
    frame = pd.DataFrame(
        {
            "sample_id": ids,
            "captured_at": pd.date_range("2026-01-01", periods=rows, freq="min", tz="UTC"),
            "caption": captions,
            "language": [None if caption is None else ("en", "de", "fr", "es")[i % 4] for i, caption in enumerate(captions)],
            "label": pd.array([None if i % 7 == 0 else i % 10 for i in range(rows)], dtype="Int64"),
            "image_width": pd.array(np.where(has_image, 8, None), dtype="Int64"),
            "image_height": pd.array(np.where(has_image, 8, None), dtype="Int64"),
            "image_contrast": np.where(has_image, rng.uniform(0.1, 0.5, rows), np.nan),
            "audio_seconds": np.where(has_audio, rng.uniform(0.5, 1.1, rows), np.nan),
            "audio_peak": rng.uniform(0.1, 1.0, rows),
            "caption_chars": pd.array([None if c is None else len(c) for c in captions], dtype="Int64"),
            "source": None,
            "meta": "{}",
            "image": [f"images/{sid}.png" if image else None for sid, image in zip(ids, has_image)],
            "image_dhash": [f"{i:016x}" if image else None for i, image in enumerate(has_image)],
            "audio": [f"audio/{sid}.wav" if audio else None for sid, audio in zip(ids, has_audio)],
            "audio_rms_db": np.where(has_audio, rng.uniform(-30.0, -10.0, rows), np.nan),
            **dict.fromkeys(("depth", "thermal", "imu")),
        }
    )
    return frame[list(CLEAN_COLUMNS)]


def test_clean_table_passes_and_writes_data_docs(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    rows = make_clean_rows()
    before = rows.copy()

    outcome = validate_rows(rows, tmp_path / "gx", PARAMS, batch_id="b1")

    assert outcome.failed == {}
    assert outcome.statistics["success_percent"] == 100.0
    assert outcome.statistics["evaluated_expectations"] == outcome.statistics["successful_expectations"] > 0
    assert outcome.data_docs is not None and outcome.data_docs.name == "index.html" and outcome.data_docs.exists()
    assert outcome.suite_name == "clean_rows"
    pd.testing.assert_frame_equal(rows, before)  # the caller's frame is untouched
    assert "Calculating Metrics" not in capfd.readouterr().err  # GX progress bars are off


def test_the_result_carries_the_run_id_as_its_gx_run_name_and_names_its_own_data_docs_page(tmp_path: Path) -> None:
    run_id = "20261205T120000-abc123"
    outcome = validate_rows(make_clean_rows(), tmp_path / "gx", PARAMS, batch_id="b1", run_name=run_id)

    page = outcome.data_docs_page
    assert page is not None and page.is_file() and page.suffix == ".html"
    assert run_id in page.parts and "clean_rows" in page.parts  # validations/<suite>/<run name>/…
    stored = list((tmp_path / "gx").rglob(f"validations/clean_rows/{run_id}/*/*.json"))
    assert len(stored) == 1 and json.loads(stored[0].read_text())["meta"]["run_id"]["run_name"] == run_id


def test_gx_does_not_hash_every_value_of_the_table(tmp_path: Path) -> None:
    # GX fingerprints a batch by hashing each value (a Python string per Arrow-backed value: 16 MB at 100k rows,
    # docs/reference/testing.md); flywheel turns it off through GX's threshold, and reads no fingerprint.
    validate_rows(make_clean_rows(), tmp_path / "gx", PARAMS, batch_id="b1")
    (stored,) = (tmp_path / "gx").rglob("validations/clean_rows/*/*/*.json")
    markers = json.loads(stored.read_text())["meta"]["batch_markers"]
    assert "ge_load_time" in markers and "pandas_data_fingerprint" not in markers


def test_a_batch_id_that_reads_as_a_time_still_gets_its_data_docs_page(tmp_path: Path) -> None:
    # Without a run id the batch id is the run name; an all-numeric one overflows dateutil, with which GX titles the page.
    outcome = validate_rows(make_clean_rows(), tmp_path / "gx", PARAMS, batch_id="5537131626864212")
    page = outcome.data_docs_page
    assert page is not None and page.is_file() and "batch-5537131626864212" in page.parts


def test_the_data_docs_index_lists_the_latest_results_and_every_result_keeps_its_page(tmp_path: Path) -> None:
    """GX reads every stored result to build the index at each run, which made validation slower with every batch
    before it: the index lists the latest `data_docs_index_results` (3 here), and older results keep their pages."""
    params = replace(PARAMS, data_docs_index_results=3)
    rows = make_clean_rows(rows=12)
    pages = [validate_rows(rows, tmp_path / "gx", params, batch_id="b1", run_name=f"run{i}").data_docs_page
             for i in range(5)]
    assert all(page is not None and page.is_file() for page in pages)
    index = pages[-1].parents[4] / "index.html"  # validations/<suite>/<run name>/<time>/<batch>.html
    listed = {name for name in (f"run{i}" for i in range(5)) if f"/{name}/" in index.read_text()}
    assert listed == {"run2", "run3", "run4"}
    assert "validation_results_limit: 3" in (tmp_path / "gx" / "great_expectations.yml").read_text()


def test_each_bad_row_is_reported_with_the_expectation_it_failed(tmp_path: Path) -> None:
    rows = make_clean_rows()
    rows.loc[1, "label"] = 12
    rows.loc[2, "language"] = "xx"
    rows.loc[3, "audio_seconds"] = 0.01

    outcome = validate_rows(rows, tmp_path / "gx", PARAMS, batch_id="b1")

    assert outcome.failed == {
        "s0001": ["expect_column_values_to_be_in_set(label)"],
        "s0002": ["expect_column_values_to_be_in_set(language)"],
        "s0003": ["expect_column_values_to_be_between(audio_seconds)"],
    }
    assert outcome.statistics["failed_rows"] == 3
    assert outcome.statistics["unsuccessful_expectations"] == 3


def test_labels_are_judged_against_the_tasks_classes_and_languages_only_when_the_task_names_them(tmp_path: Path) -> None:
    rows = make_clean_rows()
    rows["label"] = pd.array([None if i % 7 == 0 else i % 4 for i in range(len(rows))], dtype="Int64")  # 0..3
    rows.loc[2, "language"] = "ja"
    three_classes = validate_params(n_classes=3, languages=None, max_bad_row_share=0.5)

    outcome = validate_rows(rows, tmp_path / "gx", three_classes, batch_id="b1")

    beyond = rows.loc[rows["label"] == 3, "sample_id"].tolist()  # class index 3 of a 3-class task
    assert beyond and sorted(outcome.failed) == sorted(beyond)
    assert all(names == ["expect_column_values_to_be_in_set(label)"] for names in outcome.failed.values())
    assert "s0002" not in outcome.failed  # no languages in the task: no language check at all
    checked = json.loads(next((tmp_path / "gx" / "expectations").glob("clean_rows.json")).read_text())
    assert not [e for e in checked["expectations"] if e["kwargs"].get("column") == "language"
                and e["type"] == "expect_column_values_to_be_in_set"]


def test_too_many_bad_rows_rejects_the_batch(tmp_path: Path) -> None:
    rows = make_clean_rows(rows=40)
    rows.loc[:9, "image_contrast"] = 0.0  # 10 of 40 rows: 25 % > 20 %

    with pytest.raises(BatchRejected) as caught:
        validate_rows(rows, tmp_path / "gx", PARAMS, batch_id="b1")

    message = str(caught.value)
    assert "expect_column_values_to_be_between(image_contrast)" in message
    assert "25.0%" in message and "max_bad_row_share=20.0%" in message
    assert caught.value.sample_ids == ["s0000", "s0001", "s0002", "s0003", "s0004"]
    assert caught.value.observed == pytest.approx(0.25)


def test_bad_rows_at_the_bound_are_quarantined_not_rejected(tmp_path: Path) -> None:
    rows = make_clean_rows(rows=40)
    rows.loc[:7, "caption_chars"] = PARAMS.max_caption_chars + 1  # 8 of 40 rows: exactly 20 %

    outcome = validate_rows(rows, tmp_path / "gx", PARAMS, batch_id="b1")

    assert len(outcome.failed) == 8


def test_empty_table_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(BatchRejected, match="empty"):
        validate_rows(make_clean_rows().iloc[:0], tmp_path / "gx", PARAMS, batch_id="b1")


def test_row_without_sample_id_rejects_the_batch(tmp_path: Path) -> None:
    rows = make_clean_rows()
    rows.loc[5, "sample_id"] = None  # cannot be quarantined by id: the clean stage let it through

    with pytest.raises(BatchRejected, match=r"expect_column_values_to_not_be_null\(sample_id\).*allowed: 0"):
        validate_rows(rows, tmp_path / "gx", PARAMS, batch_id="b1")


def test_second_run_on_the_same_context_reuses_it(tmp_path: Path) -> None:
    gx_dir = tmp_path / "gx"
    rows = make_clean_rows()
    validate_rows(rows, gx_dir, PARAMS, batch_id="b1")
    without_spanish = validate_params(n_classes=10, languages=("en", "de", "fr"), max_bad_row_share=0.5)

    outcome = validate_rows(rows, gx_dir, without_spanish, batch_id="b2")  # updates the saved suite

    spanish = rows.loc[rows["language"] == "es", "sample_id"].tolist()
    assert sorted(outcome.failed) == spanish
    assert all(names == ["expect_column_values_to_be_in_set(language)"] for names in outcome.failed.values())
    assert len(list((gx_dir / "expectations").glob("*.json"))) == 1


def test_a_column_missing_or_of_the_wrong_dtype_rejects_the_batch(tmp_path: Path) -> None:
    # Behaviour change: a missing column used to raise ValueError before GX ran; the schema
    # expectations now name it, and the run leaves a validation result behind.
    with pytest.raises(BatchRejected, match=r"expect_column_to_exist\(audio_peak\)") as missing:
        validate_rows(make_clean_rows().drop(columns="audio_peak"), tmp_path / "gx", PARAMS, batch_id="b1")
    rows = make_clean_rows()
    rows["label"] = rows["label"].astype(float)  # a nullable integer column read back as float

    with pytest.raises(BatchRejected, match=r"expect_column_type_to_be\(label\)") as wrong_type:
        validate_rows(rows, tmp_path / "gx", PARAMS, batch_id="b2")

    assert (missing.value.observed, missing.value.bound) == ("absent", "present")
    assert (wrong_type.value.observed, wrong_type.value.bound) == ("float64", "Int64")


def test_text_values_of_another_type_are_quarantined_and_ids_of_another_type_reject(tmp_path: Path) -> None:
    rows = make_clean_rows()
    rows.at[3, "caption"] = 42

    outcome = validate_rows(rows, tmp_path / "gx", PARAMS, batch_id="b1")

    assert outcome.failed == {"s0003": ["expect_column_values_to_be_of_type(caption)"]}
    rows.at[4, "sample_id"] = 4  # quarantine matches ids as strings: this row would slip through
    with pytest.raises(BatchRejected, match=r"expect_column_values_to_be_of_type\(sample_id\).*allowed: 0"):
        validate_rows(rows, tmp_path / "gx", PARAMS, batch_id="b2")


# ---- reference bounds ----------------------------------------------------------------------------

REFERENCE_BATCH_ROWS = 200


def make_reference(batches: int = 3) -> pd.DataFrame:
    """Clean rows of earlier accepted batches, oldest first, each with its batch_id."""
    frames = [
        make_clean_rows(REFERENCE_BATCH_ROWS, seed=100 + b, prefix=f"r{b}-").assign(batch_id=f"r{b}")
        for b in range(batches)
    ]
    return pd.concat(frames, ignore_index=True)


def test_a_batch_like_the_reference_passes_and_its_profile_is_saved(tmp_path: Path) -> None:
    reference = make_reference()

    outcome = validate_rows(make_clean_rows(REFERENCE_BATCH_ROWS, seed=7), tmp_path / "gx", PARAMS, "b1", reference=reference)

    assert outcome.failed == {}
    assert outcome.statistics["reference_batches"] == 3 and outcome.statistics["reference_expectations"] > 0
    assert outcome.reference_profile == tmp_path / "gx" / "profiles" / "b1.json"
    profile = json.loads(outcome.reference_profile.read_text())
    assert profile["batch_ids"] == ["r0", "r1", "r2"] and profile["median_batch_rows"] == REFERENCE_BATCH_ROWS
    expected = reference.groupby("batch_id")["audio_seconds"].mean().median()
    assert profile["columns"]["audio_seconds"]["center"] == pytest.approx(expected)
    assert profile["null_shares"]["audio_seconds"] == pytest.approx(0.25)


def test_a_batch_ten_times_smaller_fails_the_row_count_bound(tmp_path: Path) -> None:
    rows = make_clean_rows(REFERENCE_BATCH_ROWS // 10, seed=7)

    with pytest.raises(BatchRejected) as caught:
        validate_rows(rows, tmp_path / "gx", PARAMS, "b1", reference=make_reference())

    message = str(caught.value)
    assert caught.value.expectation == "expect_table_row_count_to_be_between"
    assert (caught.value.observed, caught.value.bound) == (20, 40)  # 0.2 x the median reference batch of 200
    assert "expect_table_row_count_to_be_between observed 20, below the bound 40" in message


def test_doubled_audio_durations_fail_the_mean_bound_naming_the_furthest_rows(tmp_path: Path) -> None:
    rows = make_clean_rows(REFERENCE_BATCH_ROWS, seed=7)
    rows["audio_seconds"] *= 2  # still within the row-level range: only the distribution gives it away

    with pytest.raises(BatchRejected) as caught:
        validate_rows(rows, tmp_path / "gx", PARAMS, "b1", reference=make_reference())

    rejected = caught.value
    longest = rows.nlargest(5, "audio_seconds")["sample_id"].tolist()
    assert rejected.expectation == "expect_column_mean_to_be_between(audio_seconds)"
    assert rejected.observed == pytest.approx(rows["audio_seconds"].mean())
    assert float(rejected.observed) > float(rejected.bound)
    assert rejected.sample_ids == longest and str(longest) in str(rejected)
    assert f"above the bound {rejected.bound:.4g}" in str(rejected)


def test_a_column_losing_its_values_fails_the_null_share_bound(tmp_path: Path) -> None:
    rows = make_clean_rows(REFERENCE_BATCH_ROWS, seed=7)
    rows.loc[: REFERENCE_BATCH_ROWS // 2, ["audio", "audio_seconds", "audio_rms_db", "voice"]] = None

    with pytest.raises(BatchRejected, match=r"null share .* above the bound") as caught:
        validate_rows(rows, tmp_path / "gx", PARAMS, "b1", reference=make_reference())

    assert caught.value.expectation.startswith("expect_column_values_to_not_be_null(")
    assert caught.value.sample_ids == ["s0000", "s0001", "s0002", "s0003", "s0004"]


def test_quarantined_rows_do_not_count_towards_the_reference_bounds(tmp_path: Path) -> None:
    rows = make_clean_rows(REFERENCE_BATCH_ROWS, seed=7)
    rows.loc[rows.index[1:40:4], "audio_seconds"] = 60.0  # 10 rows far out of range: their mean would be a shift

    outcome = validate_rows(rows, tmp_path / "gx", PARAMS, "b1", reference=make_reference())

    assert len(outcome.failed) == 10 and outcome.statistics["reference_batches"] == 3


def test_without_enough_reference_the_reference_checks_are_skipped(tmp_path: Path) -> None:
    rows = make_clean_rows(REFERENCE_BATCH_ROWS // 10, seed=7)  # would fail the row-count bound

    first = validate_rows(rows, tmp_path / "gx", PARAMS, "b1")
    thin = validate_rows(rows, tmp_path / "gx", PARAMS, "b2", reference=make_reference().iloc[: PARAMS.min_reference_rows - 1])
    itself = validate_rows(rows, tmp_path / "gx", PARAMS, "b3", reference=rows.assign(batch_id="b3"))

    for outcome in (first, thin, itself):
        assert outcome.failed == {} and outcome.reference_profile is None
        assert outcome.statistics["reference_batches"] == outcome.statistics["reference_expectations"] == 0
    assert not (tmp_path / "gx" / "profiles").exists()


def test_the_reference_is_the_latest_batches(tmp_path: Path) -> None:
    params = validate_params(n_classes=10, reference_batches=2)
    profile = build_reference_profile(make_reference(batches=4), params)

    assert profile.batch_ids == ("r2", "r3") and profile.rows == 2 * REFERENCE_BATCH_ROWS
    with pytest.raises(ValueError, match="batch_id"):
        build_reference_profile(make_clean_rows(), params)


@pytest.mark.parametrize(
    "bad",
    [
        {"min_batch_rows_factor": 1.5},
        {"max_batch_rows_factor": 0.5},
        {"max_mean_shift_stds": -1.0},
        {"reference_batches": 0},
        {"distribution_columns": ("audio_seconds", "language")},
        {"n_classes": 1},
        {"languages": ()},
    ],
)
def test_inconsistent_reference_params_fail_at_start_up(bad: dict) -> None:
    with pytest.raises(ValueError, match=next(iter(bad))):
        validate_params(**{"n_classes": 10, **bad})


# ---- the feature table ---------------------------------------------------------------------------


def make_features(clean_dir: Path) -> pd.DataFrame:
    """The transform's output for a few clean rows whose image and audio files exist."""
    rows = make_clean_rows(12)
    for path in rows["image"].dropna():
        (clean_dir / path).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.random.default_rng(0).integers(0, 256, (8, 8), dtype=np.uint8)).save(clean_dir / path)
    for path in rows["audio"].dropna():
        (clean_dir / path).parent.mkdir(parents=True, exist_ok=True)
        tone = 0.5 * np.sin(2 * np.pi * 150 * np.arange(8000) / 16000)
        sf.write(clean_dir / path, tone.astype(np.float32), 16000, subtype="PCM_16")
    return compute_sample_features(clean_dir, rows, "b1")


def test_feature_suite_passes_the_transform_output_and_catches_an_out_of_range_ink_ratio(tmp_path: Path) -> None:
    features = make_features(tmp_path / "clean")
    assert validate_features(features, tmp_path / "gx", "b1", PARAMS.data_docs_index_results).failed == {}
    broken = features.copy()
    broken.loc[1, "img_ink_ratio"] = 1.5

    outcome = validate_features(broken, tmp_path / "gx", "b1", PARAMS.data_docs_index_results)

    assert outcome.failed == {"s0001": ["expect_column_values_to_be_between(img_ink_ratio)"]}
    assert outcome.suite_name == "sample_features" and outcome.statistics["failed_rows"] == 1
    with pytest.raises(BatchRejected, match=r"expect_column_type_to_be\(img_ink_ratio\)"):
        validate_features(features.astype({"img_ink_ratio": "float64"}), tmp_path / "gx", "b1", PARAMS.data_docs_index_results)


def test_every_suite_has_a_data_docs_page(tmp_path: Path) -> None:
    gx_dir = tmp_path / "gx"
    outcome = validate_rows(make_clean_rows(REFERENCE_BATCH_ROWS, seed=7), gx_dir, PARAMS, "b1", reference=make_reference())
    validate_features(make_features(tmp_path / "clean"), gx_dir, "b1", PARAMS.data_docs_index_results)

    assert outcome.data_docs is not None
    index = outcome.data_docs.read_text()
    for suite in ("clean_rows", "clean_rows_reference", "sample_features"):
        assert f'href="expectations/{suite}.html"' in index  # the suite's page
        assert f"'validations/{suite}/b1/" in index  # this run's result page
    assert sorted(p.stem for p in (gx_dir / "expectations").glob("*.json")) == [
        "clean_rows", "clean_rows_reference", "sample_features"
    ]


def test_data_docs_pages_render_as_gx_renders_them_with_each_template_compiled_once_per_process(tmp_path, monkeypatch):
    """features/gx_views.py: GX made a Jinja environment per site build and compiled a page's templates at every
    checkpoint run. The site names flywheel's views (GX's, on one template cache per process); a home whose
    site config predates them gets them on its next validation; later validations compile no template but a
    new home's own styles file, and their pages hold what GX's own views render (ids and times apart)."""
    import re

    import great_expectations as gx
    import jinja2
    import yaml

    from features.data_docs import localize_data_docs
    from features.gx_views import VIEW_CONFIGS, compiled_templates, forget_compiled_templates

    forget_compiled_templates()  # as a process that has rendered no page yet
    compiles = []
    original = jinja2.Environment.compile
    monkeypatch.setattr(jinja2.Environment, "compile",
                        lambda env, source, name=None, *a, **k: compiles.append(name) or original(env, source, name, *a, **k))
    first = validate_rows(make_clean_rows(), tmp_path / "first", PARAMS, "b1")
    assert compiles and compiled_templates() >= len(compiles)  # the first pages of this process compiled them
    site = yaml.safe_load((tmp_path / "first" / "great_expectations.yml").read_text())["data_docs_sites"]["local_site"]
    assert site["site_index_builder"]["view"] == VIEW_CONFIGS["index"]
    assert {name: section["view"] for name, section in site["site_section_builders"].items()} == dict.fromkeys(
        ("expectations", "validations", "profiling"), VIEW_CONFIGS["page"])

    compiles.clear()
    again = validate_rows(make_clean_rows(), tmp_path / "second", PARAMS, "b1")  # a new home, the same process
    assert compiles == ["data_docs_custom_styles.css"]  # only the new home's own file (its styles folder)
    compiles.clear()
    validate_rows(make_clean_rows(), tmp_path / "second", PARAMS, "b9")
    assert compiles == []

    def page_text(outcome) -> str:  # the page without the ids and times that differ between two builds
        html = outcome.data_docs_page.read_text()
        return re.sub(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|\d{8}T\d{6}\.\d+Z|"
                      r"\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}(\.\d+)?(\+00:00|Z)?", "", html)

    ours = page_text(again)
    assert ours == page_text(first)
    # GX's own views, on the same result, render the same page; a site config without flywheel's views (a home
    # from before them) gets them back at the next validation.
    context = gx.get_context(mode="file", context_root_dir=tmp_path / "second")
    sites = context.variables.data_docs_sites
    del sites["local_site"]["site_section_builders"], sites["local_site"]["site_index_builder"]["view"]
    context.variables.data_docs_sites = sites
    context.variables.save()
    context.build_data_docs(site_names=["local_site"])
    localize_data_docs(again.data_docs.parent)  # as every validation does: the scripts from local copies
    assert page_text(again) == ours  # the page file, now written by GX's views
    validate_rows(make_clean_rows(), tmp_path / "second", PARAMS, "b2")
    site = yaml.safe_load((tmp_path / "second" / "great_expectations.yml").read_text())["data_docs_sites"]["local_site"]
    assert site["site_index_builder"]["view"] == VIEW_CONFIGS["index"]
    assert site["site_section_builders"]["validations"]["view"] == VIEW_CONFIGS["page"]


def test_a_gx_config_a_killed_run_cut_off_is_set_aside_and_saved_again(tmp_path: Path, caplog) -> None:
    """GX writes suites, validation definitions and checkpoints in place: a kill mid-write left a cut-off JSON
    file that every later context refused to open. It is renamed aside, logged, and saved again."""
    gx_dir = tmp_path / "gx"
    rows = make_clean_rows()
    validate_rows(rows, gx_dir, PARAMS, batch_id="b1")
    suite_file = next((gx_dir / "expectations").glob("*.json"))
    suite_file.write_text(suite_file.read_text()[: len(suite_file.read_text()) // 2])  # what a kill mid-write leaves
    with caplog.at_level("WARNING", logger="flywheel.validate"):
        outcome = validate_rows(rows, gx_dir, PARAMS, batch_id="b2")
    assert outcome.failed == {}
    assert json.loads(suite_file.read_text())["expectations"]  # saved whole again
    assert suite_file.with_name(suite_file.name + ".unreadable").exists()  # the cut-off one kept for inspection
    assert any("unreadable" in r.getMessage() and suite_file.name in r.getMessage() for r in caplog.records)
    assert all(list((gx_dir / folder).glob("*.json.unreadable")) for folder in ("validation_definitions", "checkpoints"))


def _validate_killed_at_a_config_write(gx_dir: Path, clean_dir: Path, written: float) -> None:
    """A run's validation of the feature table, SIGKILLed while GX rewrites great_expectations.yml: the file is
    truncated and `written` of the new text is on disk when the process dies (in a forked child)."""
    import signal

    from great_expectations.data_context.data_context import file_data_context
    from great_expectations.data_context.store import inline_store_backend

    class KilledMidWrite:
        def __init__(self, handle):
            self.handle = handle

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def __getattr__(self, name):  # encoding and the like, which YAML writers look at
            return getattr(self.handle, name)

        def write(self, text: str) -> None:
            self.handle.write(text[: int(len(text) * written)])
            self.handle.flush()
            os.kill(os.getpid(), signal.SIGKILL)

    def killing_open(path, mode="r", *args, **kwargs):
        handle = open(path, mode, *args, **kwargs)
        return KilledMidWrite(handle) if "w" in mode and str(path).endswith("great_expectations.yml") else handle

    file_data_context.open = killing_open  # the module globals GX's two writers of the file resolve `open` in
    inline_store_backend.open = killing_open
    validate_features(make_features(clean_dir), gx_dir, "b1", index_results=10)
    os._exit(3)  # not reached: the validation adds the feature table's asset, a config write


@pytest.mark.parametrize(("written", "first_use"), [(0.0, False), (0.5, True)],
                         ids=["empty-after-a-whole-run", "half-written-on-the-folders-first-use"])
def test_a_run_killed_while_gx_rewrites_its_project_config_leaves_a_folder_the_next_run_opens(
        tmp_path: Path, caplog, written: float, first_use: bool) -> None:
    """GX rewrites great_expectations.yml in place; a kill between the truncation and the write (CI: a run killed
    1.58 s in) left it empty or cut off, and every later run of the home failed to open GX. The config as the
    killed run found it is put back (or the scaffold redone), its half-saved objects saved again, and it says so."""
    import multiprocessing

    gx_dir = tmp_path / "gx"
    rows = make_clean_rows()
    if not first_use:
        validate_rows(rows, gx_dir, PARAMS, batch_id="b0")
    child = multiprocessing.get_context("fork").Process(
        target=_validate_killed_at_a_config_write, args=(gx_dir, tmp_path / "clean", written))
    child.start()
    child.join()
    assert child.exitcode == -9  # killed inside GX's write, as a kill at that moment leaves it
    assert (gx_dir / "great_expectations.yml").stat().st_size < 4000  # cut off: what the next run finds
    with caplog.at_level("WARNING", logger="flywheel.validate"):
        assert validate_rows(rows, gx_dir, PARAMS, batch_id="b1").failed == {}
        assert validate_features(make_features(tmp_path / "clean"), gx_dir, "b1", index_results=10).failed == {}
    assert any("was killed while GX may have been writing" in r.getMessage() for r in caplog.records)
    assert sorted(p.stem for p in (gx_dir / "checkpoints").glob("*.json")) == ["clean_rows", "sample_features"]
    assert not list(gx_dir.glob(".flywheel-session.json"))  # no journal left once a session ends
