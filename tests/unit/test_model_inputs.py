"""Model inputs are written as shards, one at a time, and read back as if they were one archive."""

from __future__ import annotations

import numpy as np
import pytest

from features.clean import clean_batch
from features.ingest import ingest_batch
from features.task import Task, build_prompts
from models.inputs import build_model_inputs, has_model_inputs, iter_model_inputs, load_model_inputs, save_model_input_shards
from tests.unit.params_support import clean_params, input_spec


@pytest.fixture(scope="module")
def cleaned(demo_batch_factory, tmp_path_factory):
    work = tmp_path_factory.mktemp("inputs")
    ingested = ingest_batch(demo_batch_factory(samples=30, seed=4), work / "raw")
    classes = tuple(str(k) for k in range(10))  # the demo batch's labels
    task = Task(classes=classes, prompts=build_prompts(classes, "a picture of {label}"))
    return clean_batch(ingested.batch_dir, work / "clean", clean_params(task))


def test_shards_read_back_equal_to_one_build(cleaned, tmp_path):
    rows, spec = cleaned.rows, input_spec()
    folder = tmp_path / "batch"
    shards = save_model_input_shards(folder, cleaned.batch_dir, rows, spec, shard_rows=7)
    assert shards == -(-len(rows) // 7) and len(list(folder.glob("part-*.npz"))) == shards
    assert [len(part) for part in iter_model_inputs(folder)][:-1] == [7] * (shards - 1)
    whole, loaded = build_model_inputs(cleaned.batch_dir, rows, spec), load_model_inputs(folder)
    assert list(loaded.sample_id) == list(rows["sample_id"])
    np.testing.assert_array_equal(loaded.image, whole.image)
    np.testing.assert_array_equal(loaded.audio, whole.audio)
    np.testing.assert_array_equal(loaded.has_audio, whole.has_audio)


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
