"""Model inputs are written as shards, one at a time, and read back as if they were one archive; the ones
clean builds from what it decoded equal those read back from its files."""

from __future__ import annotations

from dataclasses import fields

import numpy as np
import pandas as pd
import pytest

from features.clean import clean_batch
from features.ingest import ingest_batch
from features.task import Task, build_prompts
from features.transform import STATS_FILE, compute_sample_features
from models.inputs import (CLEAN_INPUTS_DIR, build_model_inputs, has_model_inputs, iter_model_inputs, load_clean_inputs,
                           load_model_inputs, save_model_input_shards)
from tests.unit.params_support import clean_params, input_spec


CLASSES = tuple(str(k) for k in range(10))  # the demo batch's labels
TASK = Task(classes=CLASSES, prompts=build_prompts(CLASSES, "a picture of {label}"))


@pytest.fixture(scope="module")
def cleaned(demo_batch_factory, tmp_path_factory):
    work = tmp_path_factory.mktemp("inputs")
    ingested = ingest_batch(demo_batch_factory(samples=30, seed=4), work / "raw")
    return clean_batch(ingested.batch_dir, work / "clean", clean_params(TASK))


def _assert_same_inputs(loaded, whole):
    for field in fields(whole):
        np.testing.assert_array_equal(getattr(loaded, field.name), getattr(whole, field.name), err_msg=field.name)


def test_the_arrays_clean_built_equal_those_read_back_from_its_files(cleaned, tmp_path):
    """Decode once: the transform's inputs come from the arrays clean built while decoding, bit for bit the
    ones the written PNGs and WAVs give when read back (and every row that passed, in order)."""
    rows, spec = cleaned.rows, input_spec()
    assert (cleaned.batch_dir / CLEAN_INPUTS_DIR / "spec.json").is_file()
    folder = tmp_path / "batch"
    save_model_input_shards(folder, cleaned.batch_dir, rows, spec)
    _assert_same_inputs(load_model_inputs(folder), build_model_inputs(cleaned.batch_dir, rows, spec))
    kept = rows.iloc[::3].reset_index(drop=True)  # rows validation let through: a part is rewritten with them
    save_model_input_shards(folder, cleaned.batch_dir, kept, spec)
    _assert_same_inputs(load_model_inputs(folder), build_model_inputs(cleaned.batch_dir, kept, spec))
    _assert_same_inputs(load_clean_inputs(cleaned.batch_dir, kept, spec), build_model_inputs(cleaned.batch_dir, kept, spec))


def test_the_clean_stats_equal_those_computed_from_its_files(cleaned):
    rows = cleaned.rows
    from_stats = compute_sample_features(cleaned.batch_dir, rows, "b")
    (cleaned.batch_dir / STATS_FILE).rename(cleaned.batch_dir / "moved.parquet")
    try:
        from_files = compute_sample_features(cleaned.batch_dir, rows, "b")
    finally:
        (cleaned.batch_dir / "moved.parquet").rename(cleaned.batch_dir / STATS_FILE)
    pd.testing.assert_frame_equal(from_stats, from_files)
    assert from_stats["aud_pitch_hz"].notna().any() and from_stats["img_sharpness"].notna().all()


def test_shards_read_back_equal_to_one_build(cleaned, tmp_path):
    """Rows the clean arrays do not hold in this order (here reversed) are built from the files, in shards."""
    rows, spec = cleaned.rows.iloc[::-1].reset_index(drop=True), input_spec()
    folder = tmp_path / "batch"
    shards = save_model_input_shards(folder, cleaned.batch_dir, rows, spec, shard_rows=7)
    assert shards == -(-len(rows) // 7) and len(list(folder.glob("part-*.npz"))) == shards
    assert [len(part) for part in iter_model_inputs(folder)][:-1] == [7] * (shards - 1)
    whole, loaded = build_model_inputs(cleaned.batch_dir, rows, spec), load_model_inputs(folder)
    assert list(loaded.sample_id) == list(rows["sample_id"])
    _assert_same_inputs(loaded, whole)


def test_rewrite_replaces_every_shard_and_empty_batch_is_not_missing(cleaned, tmp_path):
    folder = tmp_path / "batch"
    assert not has_model_inputs(folder)
    save_model_input_shards(folder, cleaned.batch_dir, cleaned.rows, input_spec(), shard_rows=5)
    save_model_input_shards(folder, cleaned.batch_dir, cleaned.rows.iloc[:0], input_spec(), shard_rows=5)
    assert len(list(folder.glob("part-*.npz"))) == 1  # no stale shard of the larger write survives
    assert has_model_inputs(folder) and len(load_model_inputs(folder)) == 0
    assert not list(tmp_path.glob(".*"))  # no staging or trash folder left behind


def test_missing_inputs_name_the_path(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no model inputs at"):
        load_model_inputs(tmp_path / "empty")
    with pytest.raises(ValueError, match="shard_rows must be at least 1"):
        save_model_input_shards(tmp_path / "x", tmp_path, __import__("pandas").DataFrame(), input_spec(), shard_rows=0)


def test_clean_writes_its_arrays_in_bounded_parts(cleaned, tmp_path, monkeypatch):
    """A worker holds one part of PART_ROWS rows, however long its chunk: parts split mid-chunk still
    give every row once, in order, and the same clean table and statistics."""
    import pandas as pd

    import features.clean

    monkeypatch.setattr(features.clean, "PART_ROWS", 4)
    raw = cleaned.batch_dir.parents[1] / "raw" / cleaned.batch_dir.name
    again = clean_batch(raw, tmp_path / "clean", clean_params(TASK))
    parts = sorted((again.batch_dir / CLEAN_INPUTS_DIR).glob("part-*.npz"))
    assert len(parts) == -(-len(again.rows) // 4) and all(len(load_model_inputs(p)) <= 4 for p in parts)
    pd.testing.assert_frame_equal(again.rows, cleaned.rows)
    pd.testing.assert_frame_equal(pd.read_parquet(again.batch_dir / STATS_FILE),
                                  pd.read_parquet(cleaned.batch_dir / STATS_FILE))
    _assert_same_inputs(load_clean_inputs(again.batch_dir, again.rows, input_spec()),
                        build_model_inputs(again.batch_dir, again.rows, input_spec()))


def test_a_png_already_in_the_tasks_mode_is_kept_as_it_is_and_another_is_encoded(cleaned, tmp_path):
    """The demo's grayscale PNGs are their own clean versions (same bytes, nothing encoded); an RGB file in a
    grayscale task is converted and written anew."""
    import json

    from PIL import Image

    raw = cleaned.batch_dir.parents[1] / "raw" / cleaned.batch_dir.name
    first = json.loads((raw / "rows.jsonl").read_text().splitlines()[0])
    kept = cleaned.rows.set_index("sample_id").loc[first["sample_id"], "image"]
    assert (cleaned.batch_dir / kept).read_bytes() == (raw / first["image"]).read_bytes()
    from features.clean_row import clean_row

    with Image.open(raw / first["image"]) as image:
        image.convert("RGB").save(tmp_path / "rgb.png")
    out = tmp_path / "out"
    (out / "images").mkdir(parents=True)
    row = {**first, "image": "rgb.png", "audio": None, "image_sha256": "x"}
    again = clean_row(row, tmp_path, out, clean_params(TASK))
    with Image.open(out / again["image"]) as written, Image.open(raw / first["image"]) as original:
        assert written.mode == "L" and (out / again["image"]).read_bytes() != (tmp_path / "rgb.png").read_bytes()
        np.testing.assert_array_equal(np.asarray(written), np.asarray(original.convert("RGB").convert("L")))
