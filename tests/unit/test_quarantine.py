"""The quarantine is readable (list, show) and a fixed row re-enters through ingest as a new batch."""

from __future__ import annotations

import json
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from features.clean import clean_batch
from features.ingest import ingest_batch
from features.io import save_quarantine
from features.quarantine import LIST_COLUMNS, list_quarantine, readmit, show_quarantined
from features.records import QuarantineRecord, StageReport
from tests.unit.task_support import DIGITS
from tests.unit.params_support import clean_params

T0 = "2026-01-01T00:00:00Z"


def _png(seed: int) -> bytes:
    buffer = BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (16, 16), dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def _run(source: Path, home: Path):
    """Ingest and clean one landing batch, saving both stages' quarantine like the pipeline does."""
    ingested = ingest_batch(source, home / "raw")
    cleaned = clean_batch(ingested.batch_dir, home / "clean", clean_params(task=DIGITS, workers=2))
    for report in (ingested.report, cleaned.report):
        save_quarantine(home / "quarantine", ingested.batch_id, report)
    return ingested, cleaned


@pytest.fixture
def quarantined(tmp_path):
    """A batch with one good row and four bad ones, ingested and cleaned under tmp_path/home."""
    source = tmp_path / "landing"
    (source / "images").mkdir(parents=True)
    files = {"images/good.png": _png(1), "images/word.png": _png(2), "images/broken.png": b"not a png",
             "images/early.png": _png(4)}
    for name, data in files.items():
        (source / name).write_bytes(data)
    rows = [
        {"sample_id": "good", "captured_at": T0, "image": "images/good.png", "caption": "a one", "label": 1},
        {"sample_id": "word", "captured_at": T0, "image": "images/word.png", "caption": "a seven", "label": "seven",
         "operator": "ana"},
        {"sample_id": "broken", "captured_at": T0, "image": "images/broken.png", "caption": "a two"},
        {"sample_id": "early", "captured_at": "yesterday", "image": "images/early.png", "caption": "a four"},
        {"sample_id": "escape", "captured_at": T0, "image": "../outside.png", "caption": "a five"},
    ]
    (source / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    home = tmp_path / "home"
    ingested, _ = _run(source, home)
    return home, ingested.batch_id


def test_list_shows_every_quarantined_row_with_its_stage_and_reason(quarantined):
    home, batch_id = quarantined
    listing = list_quarantine(home / "quarantine")
    assert tuple(listing.columns) == LIST_COLUMNS
    assert listing[["stage", "sample_id", "reason"]].values.tolist() == [
        ["ingest", "early", "bad_timestamp"],
        ["ingest", "escape", "unsafe_path"],
        ["clean", "word", "bad_label"],
        ["clean", "broken", "corrupt_image"],
    ]
    assert (listing["batch_id"] == batch_id).all() and (listing["status"] == "quarantined").all()
    assert listing["detail"].str.len().gt(0).all()


def test_list_of_a_missing_quarantine_is_empty(tmp_path):
    listing = list_quarantine(tmp_path / "nothing-yet")
    assert listing.empty and tuple(listing.columns) == LIST_COLUMNS


def test_show_returns_the_row_as_it_arrived(quarantined):
    home, batch_id = quarantined
    (record,) = show_quarantined(home / "quarantine", "word")
    assert (record.batch_id, record.stage, record.reason) == (batch_id, "clean", "bad_label")
    assert record.row["label"] == "seven" and record.row["operator"] == "ana"
    assert "'seven'" in record.detail
    assert show_quarantined(home / "quarantine", "good") == []


def test_readmitted_label_fix_re_enters_as_a_new_batch_with_lineage(quarantined):
    home, batch_id = quarantined
    landing = readmit(home / "quarantine", home / "raw", batch_id, "word", fixed_fields={"label": 7})
    assert json.loads((landing / "manifest.jsonl").read_text())["readmitted_from"] == batch_id

    ingested, cleaned = _run(landing, home)
    assert ingested.batch_id != batch_id and not ingested.report.skipped
    assert (cleaned.report.rows_in, cleaned.report.rows_out) == (1, 1)
    row = cleaned.rows.iloc[0]
    assert (row["sample_id"], row["label"], row["caption"]) == ("word", 7, "a seven")
    assert json.loads(row["meta"]) == {"operator": "ana", "readmitted_from": batch_id}
    original = np.asarray(Image.open(BytesIO(_png(2))))
    assert np.array_equal(np.asarray(Image.open(cleaned.batch_dir / row["image"])), original)

    listing = list_quarantine(home / "quarantine").set_index("sample_id")
    assert listing.loc["word", "status"] == "readmitted" and listing.loc["word", "readmitted_to"] == str(landing)
    assert listing.loc["broken", "status"] == "quarantined"
    with pytest.raises(ValueError, match="already re-admitted"):
        readmit(home / "quarantine", home / "raw", batch_id, "word", fixed_fields={"label": 7})


def test_readmit_with_a_fixed_file(quarantined):
    home, batch_id = quarantined
    fixed = home.parent / "fixed.png"
    fixed.write_bytes(_png(3))
    landing = readmit(home / "quarantine", home / "raw", batch_id, "broken", fixed_files={"image": fixed})
    _, cleaned = _run(landing, home)
    assert cleaned.rows["sample_id"].tolist() == ["broken"] and cleaned.report.rows_quarantined == 0


def test_readmit_of_an_ingest_rejection_reads_its_files_from_the_landing_batch_safely(quarantined, tmp_path):
    home, batch_id = quarantined
    # Rejected by ingest, so its file never reached the lake; it is taken from the landing batch.
    landing = readmit(home / "quarantine", home / "raw", batch_id, "early", fixed_fields={"captured_at": T0})
    assert _run(landing, home)[1].rows["sample_id"].tolist() == ["early"]
    # A path that escapes the batch is not followed, even to re-admit: a fixed file is required.
    (tmp_path / "outside.png").write_bytes(_png(5))
    with pytest.raises(ValueError, match=r"escapes the batch folder.*fixed_files=\{'image'"):
        readmit(home / "quarantine", home / "raw", batch_id, "escape")
    landing = readmit(home / "quarantine", home / "raw", batch_id, "escape", fixed_files={"image": tmp_path / "outside.png"})
    assert _run(landing, home)[1].rows["sample_id"].tolist() == ["escape"]


def test_readmit_of_a_validation_rejection_takes_the_row_from_the_lake(quarantined, tmp_path):
    home, batch_id = quarantined
    report = StageReport("validate", 1, 0, [QuarantineRecord("good", "validate", "failed_expectation", "x", {"sample_id": "good"})])
    save_quarantine(home / "quarantine", batch_id, report)
    landing = readmit(home / "quarantine", home / "raw", batch_id, "good", out_dir=tmp_path / "fix-good")
    assert landing == tmp_path / "fix-good"
    row = json.loads((landing / "manifest.jsonl").read_text())
    assert (row["caption"], row["label"], row["image"]) == ("a one", 1, "image/good.png")
    assert not any(key.endswith("_sha256") for key in row)


def test_readmit_refuses_what_it_cannot_do(quarantined, tmp_path):
    home, batch_id = quarantined
    with pytest.raises(ValueError, match=r"no quarantined row 'nobody'.*'broken'"):
        readmit(home / "quarantine", home / "raw", batch_id, "nobody")
    with pytest.raises(ValueError, match="accepted file fields"):
        readmit(home / "quarantine", home / "raw", batch_id, "broken", fixed_files={"picture": tmp_path})
    with pytest.raises(ValueError, match="is not a file"):
        readmit(home / "quarantine", home / "raw", batch_id, "broken", fixed_files={"image": tmp_path / "missing.png"})
    assert (list_quarantine(home / "quarantine")["status"] == "quarantined").all()  # failed attempts mark nothing


def test_a_readmission_that_dies_midway_leaves_no_half_landing_batch(quarantined, monkeypatch):
    """Its folder is published whole: a failure (or a kill) while files are copied leaves no folder a user
    could ingest half of, and the readmission can simply be repeated."""
    import features.quarantine as quarantine

    home, batch_id = quarantined

    def copy_then_fail(source, target):
        raise OSError("disk full")

    monkeypatch.setattr(quarantine, "atomic_copy", copy_then_fail)
    with pytest.raises(OSError, match="disk full"):
        readmit(home / "quarantine", home / "raw", batch_id, "word", fixed_fields={"label": 7})
    assert not [p for p in (home / "quarantine" / "_readmit").iterdir() if not p.name.startswith(".")]
    monkeypatch.undo()
    landing = readmit(home / "quarantine", home / "raw", batch_id, "word", fixed_fields={"label": 7})
    assert json.loads((landing / "manifest.jsonl").read_text())["label"] == 7
