"""Feast definitions: the `sample` entity, one feature view per stats table and for labels, and
the training feature service. Declarative only; the parquet files live under FLYWHEEL_FEAST_DIR/data/<table>/."""

import os
from datetime import timedelta
from pathlib import Path

from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
from feast.data_format import ParquetFormat
from feast.types import Float32, Int64, String

DATA_DIR = Path(os.environ.get("FLYWHEEL_FEAST_DIR", ".flywheel/feast")).absolute() / "data"
TTL = timedelta(days=3650)  # samples do not expire: a label stays valid for years

sample = Entity(name="sample", join_keys=["sample_id"], value_type=ValueType.STRING, description="one observed event")


def _view(name: str, fields: list[Field], description: str) -> FeatureView:
    # One parquet file per batch in the table's folder (features/store.py); DuckDB reads them as one table.
    source = FileSource(name=f"{name}_source", path=str(DATA_DIR / name / "*.parquet"), file_format=ParquetFormat(),
                        timestamp_field="event_timestamp")
    return FeatureView(name=name, entities=[sample], ttl=TTL, schema=fields, source=source, online=True, description=description)


image_stats = _view(
    "image_stats",
    [Field(name=n, dtype=Float32) for n in ("img_mean", "img_ink_ratio", "img_center_col", "img_center_row", "img_sharpness", "img_contrast")],
    "per-image intensity, ink share, centre of mass, sharpness",
)
audio_stats = _view(
    "audio_stats",
    [Field(name=n, dtype=Float32) for n in ("aud_seconds", "aud_rms_db", "aud_peak", "aud_silence_ratio", "aud_centroid_hz", "aud_pitch_hz")],
    "per-clip duration, level, silence share, spectral centroid, pitch",
)
caption_stats = _view(
    "caption_stats",
    [Field(name="cap_chars", dtype=Float32), Field(name="cap_words", dtype=Float32),
     Field(name="cap_letter_share", dtype=Float32), Field(name="language", dtype=String),
     Field(name="cap_script", dtype=String)],
    "caption length, share of letters, declared language and the script its letters are written in",
)
labels = _view(
    "labels",
    [Field(name="label", dtype=Int64), Field(name="label_source", dtype=String),
     Field(name="label_confidence", dtype=Float32), Field(name="label_votes", dtype=String)],
    "human labels, else the label model's combination of labelling-function votes",
)

training = FeatureService(name="training", features=[image_stats, audio_stats, caption_stats, labels])
