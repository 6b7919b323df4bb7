"""flows/monitor_stage.load_human_labels: the manifest's labels, then those imported from review on top."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from features.store import upsert_batch_table
from flows.monitor_stage import load_human_labels
from flows.settings import load_settings
from tests.conftest import PROJECT


def _settings(tmp_path, stored: pd.DataFrame | None):
    settings = load_settings(tmp_path / "home", PROJECT / "params.yaml")
    if stored is not None:  # as the label stage and review imports store them
        upsert_batch_table(settings.paths.feast, "labels", "b", stored.assign(
            event_timestamp=pd.Timestamp("2026-01-01T00:00:00Z"), label_confidence=1.0, label_votes="{}"))
    return settings


def test_review_labels_override_the_manifest_and_model_labels_are_not_human(tmp_path):
    rows = pd.DataFrame({"sample_id": ["a", "b", "c"], "label": pd.array([1, None, 3], dtype="Int64")})
    stored = pd.DataFrame({"sample_id": ["a", "b", "c", "z"], "label": [7, 8, 9, 5],
                           "label_source": ["human", "human", "model", "human"]})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # pandas' deprecation of empty parts in a concat among them
        labels = load_human_labels(_settings(tmp_path, stored), rows)
    assert labels.to_dict() == {"a": 7.0, "b": 8.0, "c": 3.0}  # z is not in this batch; c's stored label is a model's


def test_labels_come_from_review_alone_or_from_the_manifest_alone(tmp_path):
    unlabelled = pd.DataFrame({"sample_id": ["a", "b"], "label": pd.array([None, None], dtype="Int64")})
    stored = pd.DataFrame({"sample_id": ["b"], "label": [4], "label_source": ["human"]})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_human_labels(_settings(tmp_path / "one", stored), unlabelled).to_dict() == {"b": 4.0}
        labelled = unlabelled.assign(label=pd.array([2, None], dtype="Int64"))
        only_manifest = load_human_labels(_settings(tmp_path / "two", None), labelled)
        none = load_human_labels(_settings(tmp_path / "three", stored.iloc[:0]), unlabelled)
    assert only_manifest.to_dict() == {"a": 2.0} and only_manifest.dtype == np.float64
    assert none.empty and none.dtype == np.float64
