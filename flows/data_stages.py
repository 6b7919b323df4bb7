"""The data stages: ingest, clean, validate, transform, label (plain functions, no Prefect)."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from features.clean import clean_batch, rows_as_objects
from features.ingest import IngestResult, ingest_batch
from features.label import build_labels
from features.label_functions import LabellingFunction
from features.locks import feature_store_lock
from features.records import QuarantineRecord, StageReport
from features.transform import CATEGORICAL_FEATURES, NUMERIC_FEATURES, compute_sample_features
from flows.settings import Settings
from flows.stage_config import (
    clean_params,
    feast_services,
    input_spec,
    label_params,
    labelling_functions,
    validate_params,
)
from models.inputs import save_model_input_shards

FEATURES_DATA = "feast/data"  # the feature store's offline tables, relative to FLYWHEEL_HOME: one DVC output


def _window_start(rows: pd.DataFrame) -> datetime:
    """Materialization window start: the batch's earliest event (a batch may arrive late)."""
    if rows.empty:
        return datetime.now(timezone.utc)
    return pd.Timestamp(rows["captured_at"].min()).to_pydatetime() - pd.Timedelta(seconds=1)


def stage_ingest(settings: Settings, source: Path | str, map_chunks=None, workers: int = 1) -> IngestResult:
    """A local folder, or any fsspec URI (s3://, memory://, …) with options from FLYWHEEL_STORAGE_OPTIONS;
    `map_chunks` spreads the chunks of manifest lines over `workers` workers (default: one after the other)."""
    return ingest_batch(source, settings.paths.lake_raw, settings.storage_options or None, map_chunks, workers)


def stage_clean(settings: Settings, raw_dir: Path, map_chunks=None):
    """Decode and verify every file; `map_chunks` spreads the chunks of rows over workers (default: threads)."""
    return clean_batch(raw_dir, settings.paths.lake_clean, clean_params(settings), map_chunks=map_chunks)


def load_clean_rows(clean_dir: Path) -> pd.DataFrame:
    """The clean-rows table of a cleaned batch, as `stage_clean` returned it (a cached clean stage)."""
    import pyarrow.parquet as pq

    from features.clean import ROWS_NAME, clean_frame
    from features.memory import table_allocation

    with table_allocation():
        return clean_frame(pq.read_table(clean_dir / ROWS_NAME))


def without_quarantined(rows: pd.DataFrame, quarantine_dir: Path, batch_id: str, stage: str) -> pd.DataFrame:
    """`rows` less those `stage` quarantined in this batch, in order: what the stage returned (a cached stage).
    The stage always wrote its quarantine file (empty or not): FileNotFoundError when it is gone."""
    from features.io import load_jsonl

    dropped = {record["sample_id"] for record in load_jsonl(quarantine_dir / batch_id / f"{stage}.jsonl")}
    return rows[~rows["sample_id"].isin(dropped)].reset_index(drop=True)


def stage_validate(settings: Settings, batch_id: str, rows: pd.DataFrame,
                   run_id: str | None = None) -> tuple[pd.DataFrame, StageReport, dict[str, Any]]:
    """GX suites on the clean rows, with bounds from the latest accepted batches; failing rows are
    quarantined, a bad batch raises BatchRejected. The results carry `run_id` as their GX run name."""
    from features.io import load_reference_rows
    from features.validate import validate_rows  # GX takes seconds to import: a cached run never validates

    params = validate_params(settings)
    paths = settings.paths
    reference = load_reference_rows(paths.lake_raw, paths.lake_clean, paths.quarantine, batch_id, params.reference_batches)
    outcome = validate_rows(rows, paths.gx, params, batch_id, reference=reference, run_name=run_id)
    failed = rows["sample_id"].isin(outcome.failed)
    quarantined = [
        QuarantineRecord(sid, "validate", "failed_expectation", "; ".join(outcome.failed[sid]), {"sample_id": sid})
        for sid in rows.loc[failed, "sample_id"]
    ]
    notes = {"data_docs": str(outcome.data_docs) if outcome.data_docs else None,
             "data_docs_page": str(outcome.data_docs_page) if outcome.data_docs_page else None,
             "gx_run_name": run_id or batch_id,
             "reference_profile": str(outcome.reference_profile) if outcome.reference_profile else None}
    report = StageReport("validate", len(rows), int((~failed).sum()), quarantined, notes=notes)
    accepted = rows[~failed].reset_index(drop=True) if failed.any() else rows  # no copy of a batch that all passed
    return accepted, report, outcome.statistics


def stage_transform(settings: Settings, batch_id: str, clean_dir: Path, rows: pd.DataFrame) -> tuple[pd.DataFrame, StageReport]:
    """Tabular features into the Feast offline store and model-input arrays into the lake.

    The feature table has its own GX suite (value ranges); rows it fails are quarantined here.
    Returns the rows that go on to labelling.
    """
    from features.store import apply_and_materialize, upsert_batch_table

    rows_in = len(rows)
    features = compute_sample_features(clean_dir, rows, batch_id)
    from features.validate import validate_features

    checked = validate_features(features, settings.paths.gx, batch_id,  # the feature table's own suite
                                validate_params(settings).data_docs_index_results)
    bad = features["sample_id"].isin(checked.failed)
    quarantined = [QuarantineRecord(sid, "transform", "failed_expectation", "; ".join(checked.failed[sid]), {"sample_id": sid})
                   for sid in features.loc[bad, "sample_id"]]
    features = features[~bad].reset_index(drop=True)
    rows = rows[~rows["sample_id"].isin(checked.failed)].reset_index(drop=True)
    with feature_store_lock(settings.paths.feast):
        for table in ("image_stats", "audio_stats", "caption_stats"):
            upsert_batch_table(settings.paths.feast, table, batch_id, features)
        materialized = apply_and_materialize(settings.paths.feast, _window_start(rows), services=feast_services(settings))
    shards = save_model_input_shards(settings.paths.batch_inputs(batch_id), clean_dir, rows, input_spec(settings))
    notes = {"features": len(NUMERIC_FEATURES) + len(CATEGORICAL_FEATURES), "feature_rows": materialized,
             "input_shards": shards}
    return rows, StageReport("transform", rows_in, len(features), quarantined, notes=notes)


def stage_label(settings: Settings, batch_id: str, rows: pd.DataFrame, clean_dir: Path,
                functions: list[LabellingFunction] | None = None) -> StageReport:
    """Human labels, the task's labelling functions and the champion's votes combined by the label model;
    labels into the feature store; low-confidence rows exported as a Label Studio review queue.

    `functions`: the task's LFs as loaded at start-up (`stage_config.labelling_functions`); None loads them here.
    """
    from features.review import save_review_queue
    from features.store import apply_and_materialize, upsert_batch_table
    from flows.model_stages import champion_votes

    params = label_params(settings)
    functions = labelling_functions(settings) if functions is None else functions
    rows = rows_as_objects(rows)  # the rows as the labelling functions and the review queue are promised them
    labels, stats = build_labels(rows, settings.task, champion_votes(settings, batch_id), params, functions)
    queue = save_review_queue(settings.paths.review / batch_id, labels, rows, str(clean_dir), params.review_threshold,
                              settings.task)
    with feature_store_lock(settings.paths.feast):
        upsert_batch_table(settings.paths.feast, "labels", batch_id, labels)
        materialized = apply_and_materialize(settings.paths.feast, _window_start(rows), services=feast_services(settings))
    return StageReport("label", len(rows), len(labels), notes={
        "labels": stats.to_summary(), "metrics": stats.to_metrics(), "review_tasks": str(queue.tasks_path),
        "review_count": queue.tasks, "feature_rows": materialized})


def stage_import_review(settings: Settings, batch_id: str, export_path: Path) -> tuple[int, str | None]:
    """A Label Studio export of a batch's review queue becomes human labels, visible from their annotation time.

    The feature store's tables get a new DVC version at once (pushed to the lake remote), so the
    labels a later model trains on are versioned even before the next run. Returns the number of
    imported labels and that version (`feast/data@md5`; None when the export held no annotation).
    """
    from features.lake_versioning import open_lake
    from features.review import build_reviewed_labels, import_annotations
    from features.store import apply_and_materialize, upsert_batch_table

    reviewed = build_reviewed_labels(import_annotations(export_path, settings.task))
    if reviewed.empty:
        return 0, None
    # Exports are cumulative: one table batch per queue re-imports idempotently.
    start = pd.Timestamp(reviewed["event_timestamp"].min()).to_pydatetime() - pd.Timedelta(seconds=1)
    with feature_store_lock(settings.paths.feast):
        upsert_batch_table(settings.paths.feast, "labels", f"review-{batch_id}", reviewed)
        apply_and_materialize(settings.paths.feast, start, services=feast_services(settings))
    lake = open_lake(settings.paths.home, settings.lake_remote, settings.lake_endpoint)
    version = lake.track(FEATURES_DATA)
    lake.push(FEATURES_DATA)
    return len(reviewed), version.to_tag()


def stage_version_data(settings: Settings, batch_id: str) -> dict[str, str]:
    """DVC-track this run's data outputs in the lake repo at FLYWHEEL_HOME and push them to its remote.

    Whole folders: `lake/inputs` and `feast/data` are exactly what training reads, so their
    versions are a model's data version. Returns {"raw", "clean", "inputs", "features"} → `path@md5`.
    """
    from features.lake_versioning import open_lake

    lake = open_lake(settings.paths.home, settings.lake_remote, settings.lake_endpoint)
    outputs = {"raw": f"lake/raw/{batch_id}", "clean": f"lake/clean/{batch_id}", "inputs": "lake/inputs",
               "features": FEATURES_DATA}
    with feature_store_lock(settings.paths.feast):  # the tables' version is one whole state, not mid-rewrite
        versions = {name: lake.track(path) for name, path in outputs.items()}
    lake.push_pending(*outputs.values())  # what a cached run tracked and pushed before costs a stat walk
    return {name: version.to_tag() for name, version in versions.items()}


def stage_data_versions(settings: Settings) -> dict[str, str]:
    """The lake's current versions of what training reads (no new batch: retraining); a folder never
    tracked raises, since a model must name its data."""
    from features.lake_versioning import open_lake

    lake = open_lake(settings.paths.home, settings.lake_remote, settings.lake_endpoint)
    versions = {name: lake.version_of(path) for name, path in (("inputs", "lake/inputs"), ("features", FEATURES_DATA))}
    untracked = [name for name, version in versions.items() if version is None]
    if untracked:
        raise ValueError(f"no DVC version of {untracked} under {settings.paths.home}: ingest a batch before retraining")
    return {name: version.to_tag() for name, version in versions.items()}
