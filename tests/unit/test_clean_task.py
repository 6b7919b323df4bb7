"""Clean speaks the task: labels are class names mapped to indices, colour is kept when the task says 3
channels, and metadata such as a voice is kept in `meta` where the task's slices read it."""

from __future__ import annotations

import json
from io import BytesIO
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from features.clean import CleanParams, clean_batch
from features.ingest import ingest_batch
from features.phash import compute_dhash
from features.task import slice_values
from tests.unit.task_support import DIGITS, SHAPES
from tests.unit.params_support import clean_params

T0 = "2026-01-01T00:00:00Z"


def _png(pixels: np.ndarray) -> bytes:
    buffer = BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _batch(folder: Path, rows: list[dict], files: dict[str, bytes] | None = None) -> Path:
    folder.mkdir(parents=True)
    for name, data in (files or {}).items():
        (folder / name).write_bytes(data)
    (folder / "manifest.jsonl").write_text("".join(json.dumps({"captured_at": T0, **r}) + "\n" for r in rows))
    return folder


def _clean(landing: Path, work: Path, params: CleanParams):
    return clean_batch(ingest_batch(landing, work / "raw").batch_dir, work / "clean", params)


def test_string_labels_become_class_indices_and_an_unknown_class_names_the_accepted_ones(tmp_path):
    labels = {"c": "circle", "t": "triangle", "none": None, "hex": "hexagon", "index": 1}  # 1 names a class "1"
    rows = [{"sample_id": sid, "caption": f"caption {sid}", "label": label} for sid, label in labels.items()]
    cleaned = _clean(_batch(tmp_path / "landing", rows), tmp_path, clean_params(SHAPES, workers=1))

    labels = cleaned.rows.set_index("sample_id")["label"]
    assert str(labels.dtype) == "Int64"
    assert labels["c"] == 0 and labels["t"] == 2 and pd.isna(labels["none"])
    details = {q.sample_id: (q.reason, q.detail) for q in cleaned.report.quarantined}
    assert set(details) == {"hex", "index"}
    for sample_id in details:
        reason, detail = details[sample_id]
        assert reason == "bad_label" and "'circle', 'square', 'triangle'" in detail, detail
    assert "'hexagon'" in details["hex"][1] and "'1'" in details["index"][1]


def test_a_three_channel_task_keeps_the_colour_and_judges_brightness_on_the_gray_view(tmp_path):
    rng = np.random.default_rng(0)
    colour = rng.integers(0, 255, (12, 16, 3), dtype=np.uint8)
    gray = rng.integers(0, 255, (12, 16), dtype=np.uint8)
    rows = [{"sample_id": "colour", "image": "a.png"}, {"sample_id": "gray", "image": "b.png"}]
    landing = _batch(tmp_path / "landing", rows, {"a.png": _png(colour), "b.png": _png(gray)})

    rgb = _clean(landing, tmp_path / "rgb", clean_params(SHAPES, workers=1))
    kept = {sid: np.asarray(Image.open(rgb.batch_dir / path)) for sid, path in zip(rgb.rows["sample_id"], rgb.rows["image"])}
    np.testing.assert_array_equal(kept["colour"], colour)  # PNG is lossless: the very pixels, in colour
    assert kept["gray"].shape == (12, 16, 3) and (kept["gray"] == gray[:, :, None]).all()  # gray file -> RGB
    one = _clean(landing, tmp_path / "gray", clean_params(DIGITS, workers=1))
    flat = {sid: np.asarray(Image.open(one.batch_dir / path)) for sid, path in zip(one.rows["sample_id"], one.rows["image"])}
    assert flat["colour"].shape == (12, 16)

    for column in ("image_width", "image_height", "image_contrast", "image_dhash"):
        assert rgb.rows[column].tolist() == one.rows[column].tolist(), column  # the same judgement either way
    assert rgb.rows.set_index("sample_id").loc["colour", "image_dhash"] == f"{compute_dhash(flat['colour']):016x}"
    assert rgb.rows["image_width"].tolist() == [16, 16] and rgb.rows["image_height"].tolist() == [12, 12]


def test_a_voice_is_metadata_kept_in_meta_where_the_slice_reads_it(tmp_path):
    rows = [{"sample_id": "a", "caption": "x", "voice": "en-us"}, {"sample_id": "b", "caption": "y"}]
    cleaned = _clean(_batch(tmp_path / "landing", rows), tmp_path, clean_params(DIGITS, workers=1))
    assert "voice" not in cleaned.rows.columns
    assert json.loads(cleaned.rows.loc[0, "meta"]) == {"voice": "en-us"}
    assert slice_values(cleaned.rows, "voice") == ["en-us", ""]
