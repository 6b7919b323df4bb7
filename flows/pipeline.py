"""The lifecycle's stages as plain functions, and the one place that wires them together.

`run_stages` takes a `call(name, fn, *args)` hook: the Prefect flow passes one that runs
each stage as a task; the plain driver (benchmarks, `flywheel stage`) calls them directly.
Nothing here imports Prefect, so the wiring is written once for both drivers.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from features.clean import CleanParams, clean_batch, load_clean_rows
from features.demo import generate_demo_batch
from features.ingest import IngestResult, ingest_batch, list_ingested_batches
from features.io import save_json, save_quarantine
from features.label import build_labels
from features.records import QuarantineRecord, StageReport
from features.transform import CATEGORICAL_FEATURES, NUMERIC_FEATURES, compute_sample_features
from features.validate import ValidateParams, validate_rows
from flows.settings import Settings
from models.gate import GateDecision, MetricThreshold, decide
from models.inputs import InputSpec, ModelInputs, build_model_inputs, load_model_inputs, save_model_inputs

StageCall = Callable[..., Any]


def call_directly(name: str, fn: Callable[..., Any], *args: Any) -> Any:
    return fn(*args)


@dataclass
class BatchState:
    """What the data stages hand on: the batch id and where its outputs are."""

    batch_id: str
    raw_dir: Path
    clean_dir: Path | None = None
    accepted: pd.DataFrame | None = None  # clean rows that passed validation


@dataclass
class RunRecord:
    """The run summary as it fills up; written to `runs/<run_id>/summary.json`."""

    run_id: str
    source: str
    started_at: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat())
    status: str = "running"
    batch_id: str | None = None
    stages: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    model: dict[str, Any] = field(default_factory=dict)
    gate: dict[str, Any] = field(default_factory=dict)
    monitor: dict[str, Any] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    failed_stage: str | None = None
    finished_at: str | None = None


def new_run_id() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]


def _record_report(settings: Settings, record: RunRecord, report: StageReport) -> None:
    save_quarantine(settings.paths.quarantine, record.batch_id or "unknown", report)
    record.stages[report.stage] = report.to_summary()


def _window_start(rows: pd.DataFrame) -> datetime:
    """Materialization window start: the batch's earliest event (a batch may arrive late)."""
    if rows.empty:
        return datetime.now(timezone.utc)
    return pd.Timestamp(rows["captured_at"].min()).to_pydatetime() - pd.Timedelta(seconds=1)


# ---- data stages -------------------------------------------------------------------------


def stage_ingest(settings: Settings, source: Path) -> IngestResult:
    return ingest_batch(source, settings.paths.lake_raw)


def _clean_params(settings: Settings) -> CleanParams:
    p = settings.params.clean
    return CleanParams(p.sample_rate, p.max_image_pixels, p.max_audio_seconds, p.silence_db,
                       near_duplicate_bits=p.near_duplicate_bits, max_sensor_values=p.max_sensor_values)


def stage_clean(settings: Settings, raw_dir: Path, map_chunks=None):
    """Decode and verify every file; `map_chunks` spreads the chunks of rows over workers (default: threads)."""
    return clean_batch(raw_dir, settings.paths.lake_clean, _clean_params(settings), map_chunks=map_chunks)


def stage_validate(settings: Settings, batch_id: str, rows: pd.DataFrame) -> tuple[pd.DataFrame, StageReport, dict[str, Any]]:
    """GX suite on the clean rows; failing rows are quarantined, a bad batch raises BatchRejected."""
    v = settings.params.validate_
    params = ValidateParams(
        languages=tuple(v.languages), min_audio_seconds=v.min_audio_seconds, max_audio_seconds=v.max_audio_seconds,
        min_image_side=v.min_image_side, min_image_contrast=v.min_image_contrast,
        max_caption_chars=v.max_caption_chars, max_bad_row_share=v.max_bad_row_share,
    )
    outcome = validate_rows(rows, settings.paths.gx, params, batch_id)
    failed = rows["sample_id"].isin(outcome.failed)
    quarantined = [
        QuarantineRecord(sid, "validate", "failed_expectation", "; ".join(outcome.failed[sid]), {"sample_id": sid})
        for sid in rows.loc[failed, "sample_id"]
    ]
    report = StageReport("validate", len(rows), int((~failed).sum()), quarantined,
                         notes={"data_docs": str(outcome.data_docs) if outcome.data_docs else None})
    return rows[~failed].reset_index(drop=True), report, outcome.statistics


def stage_transform(settings: Settings, batch_id: str, clean_dir: Path, rows: pd.DataFrame) -> StageReport:
    """Tabular features into the Feast offline store and model-input arrays into the lake."""
    from features.store import apply_and_materialize, upsert_batch_table

    features = compute_sample_features(clean_dir, rows, batch_id)
    for table in ("image_stats", "audio_stats", "caption_stats"):
        upsert_batch_table(settings.paths.feast, table, batch_id, features)
    materialized = apply_and_materialize(settings.paths.feast, _window_start(rows))
    t = settings.params.transform
    inputs = build_model_inputs(clean_dir, rows, InputSpec(t.image_size, t.n_mels, t.audio_frames))
    save_model_inputs(settings.paths.model_inputs / f"{batch_id}.npz", inputs)
    return StageReport("transform", len(rows), len(features), notes={"features": len(NUMERIC_FEATURES) + len(CATEGORICAL_FEATURES), "feature_rows": materialized})


def _label_params(settings: Settings):
    from features.label import LabelParams
    from features.label_model import LabelModelParams

    p = settings.params.label
    return LabelParams(p.min_model_confidence, p.review_threshold,
                       LabelModelParams(p.prior_accuracy, p.prior_strength, p.heldout_folds))


def champion_votes(settings: Settings, batch_id: str):
    """The champion's zero-shot image and audio predictions on this batch; None before the first champion."""
    from features.label import ModelVotes
    from models.evaluate import DIGIT_PROMPTS, predict_zero_shot
    from models.imagebind import AUDIO, VISION
    from models.registry import CHAMPION, Registry, load_version
    from models.text import encode_texts

    registry = Registry(settings.tracking_uri, settings.params.registry.model_name, settings.paths.mlflow_artifacts)
    version = registry.alias_version(CHAMPION)
    if version is None:
        return None
    model = load_version(registry, version)
    inputs = load_model_inputs(settings.paths.model_inputs / f"{batch_id}.npz")
    prompts = encode_texts(list(DIGIT_PROMPTS))
    predicted, confidence = {}, {}
    for name, modality, values, present in (("image", VISION, inputs.image, inputs.has_image),
                                            ("audio", AUDIO, inputs.audio, inputs.has_audio)):
        predicted[name], conf = predict_zero_shot(model, modality, values, prompts)
        confidence[name] = np.where(present, conf, 0.0)  # a missing file never votes
    return ModelVotes(list(inputs.sample_id), predicted, confidence)


def stage_label(settings: Settings, batch_id: str, rows: pd.DataFrame, clean_dir: Path) -> StageReport:
    """Human labels, caption parsing and the champion's votes combined by the label model; labels into
    the feature store; low-confidence rows exported as a Label Studio review queue."""
    from features.review import save_review_queue
    from features.store import apply_and_materialize, upsert_batch_table

    params = _label_params(settings)
    labels, stats = build_labels(rows, champion_votes(settings, batch_id), params)
    upsert_batch_table(settings.paths.feast, "labels", batch_id, labels)
    queue = save_review_queue(settings.paths.review / batch_id, labels, rows, str(clean_dir), params.review_threshold)
    materialized = apply_and_materialize(settings.paths.feast, _window_start(rows))
    return StageReport("label", len(rows), len(labels), notes={
        "labels": stats.to_summary(), "metrics": stats.to_metrics(), "review_tasks": str(queue.tasks_path),
        "review_count": queue.tasks, "feature_rows": materialized})


def stage_import_review(settings: Settings, batch_id: str, export_path: Path) -> int:
    """A Label Studio export of a batch's review queue becomes human labels, visible from their annotation time."""
    from features.review import build_reviewed_labels, import_annotations
    from features.store import apply_and_materialize, upsert_batch_table

    reviewed = build_reviewed_labels(import_annotations(export_path))
    if not reviewed.empty:  # exports are cumulative: one table batch per queue re-imports idempotently
        upsert_batch_table(settings.paths.feast, "labels", f"review-{batch_id}", reviewed)
        start = pd.Timestamp(reviewed["event_timestamp"].min()).to_pydatetime() - pd.Timedelta(seconds=1)
        apply_and_materialize(settings.paths.feast, start)
    return len(reviewed)


# ---- model stages ------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainOutcome:
    mlflow_run_id: str
    model_uri: str
    metrics: dict[str, float]
    training_batches: list[str]
    rows: int
    labelled_rows: int
    seconds: float
    golden_version: str


def _input_spec(settings: Settings) -> InputSpec:
    t = settings.params.transform
    return InputSpec(t.image_size, t.n_mels, t.audio_frames)


def build_golden_set(settings: Settings):
    """The fixed, fully labelled golden set: generated once from the demo source's held-out images,
    cleaned like any batch, stored with its content hash as version. Never used in training."""
    import hashlib

    from models.evaluate import EvalData

    g, spec = settings.params.gate, _input_spec(settings)
    folder = settings.paths.golden / f"seed{g.golden_seed}-n{g.golden_samples}-s{spec.image_size}-m{spec.n_mels}-f{spec.audio_frames}"
    archive = folder / "inputs.npz"
    labels_path = folder / "labels.json"
    if not archive.exists():
        generate_demo_batch(folder / "landing", samples=g.golden_samples, seed=g.golden_seed, fault_rate=0.0,
                            label_rate=1.0, split="golden")
        raw = ingest_batch(folder / "landing", folder / "raw")
        cleaned = clean_batch(raw.batch_dir, folder / "clean", _clean_params(settings))
        rows = cleaned.rows
        rows = rows[rows["image"].notna() & rows["audio"].notna() & rows["label"].notna()].reset_index(drop=True)
        save_model_inputs(archive, build_model_inputs(cleaned.batch_dir, rows, spec))
        save_json(labels_path, [int(x) for x in rows["label"]])
    inputs = load_model_inputs(archive)
    labels = np.array(json.loads(labels_path.read_text()), dtype=np.int64)
    version = hashlib.sha256(archive.read_bytes()).hexdigest()[:12]
    return EvalData(image=inputs.image, audio=inputs.audio, label=labels, voice=list(inputs.voice)), version


def _training_batches(settings: Settings) -> list[str]:
    """The training window: every ingested batch with model inputs, in ingestion order."""
    return [b for b in list_ingested_batches(settings.paths.lake_raw)
            if (settings.paths.model_inputs / f"{b}.npz").exists()]


def stage_train(settings: Settings, run_name: str, label_metrics: dict[str, float] | None = None) -> TrainOutcome:
    """Train on every accepted batch so far (labels from the feature store), evaluate on the golden set,
    log the run and the model to MLflow (with this batch's labelling metrics)."""
    import tempfile

    from features.store import get_training_frame
    from models.artifacts import save_model
    from models.evaluate import DIGIT_PROMPTS, evaluate_model
    from models.imagebind import ImageBindConfig
    from models.registry import Registry, log_training_run
    from models.text import encode_texts
    from models.train import TrainConfig, TrainingData, train_imagebind

    batches = _training_batches(settings)
    inputs = ModelInputs.concat([load_model_inputs(settings.paths.model_inputs / f"{b}.npz") for b in batches])
    inputs = inputs.take(np.flatnonzero(inputs.has_image & inputs.has_audio & inputs.has_caption))
    if len(inputs) < 2:
        raise ValueError(f"only {len(inputs)} rows with image, audio and caption: too few to train")
    entity = pd.DataFrame({"sample_id": inputs.sample_id, "event_timestamp": pd.Timestamp.now(tz="UTC")})
    labelled = get_training_frame(settings.paths.feast, entity).drop_duplicates("sample_id").set_index("sample_id")
    # Labels the label model is unsure of stay unknown to training (they wait in the review queue).
    trusted = labelled["label"].where(labelled["label_confidence"].fillna(0) >= settings.params.label.review_threshold)
    label = trusted.reindex(inputs.sample_id).fillna(-1).to_numpy(dtype=np.int64)
    data = TrainingData(image=inputs.image, audio=inputs.audio, text_emb=encode_texts(list(inputs.caption)), label=label)
    t, tr = settings.params.transform, settings.params.train
    model_config = ImageBindConfig(embed_dim=tr.embed_dim, image_size=t.image_size, audio_n_mels=t.n_mels,
                                   audio_frames=t.audio_frames)
    train_config = TrainConfig(seed=tr.seed, batch_size=tr.batch_size, epochs_stage1=tr.epochs_stage1,
                               epochs_stage2=tr.epochs_stage2, lr=tr.lr, weight_decay=tr.weight_decay,
                               label_aware=tr.label_aware)
    result = train_imagebind(data, model_config, train_config)
    golden, golden_version = build_golden_set(settings)
    metrics = evaluate_model(result.model, golden, encode_texts(list(DIGIT_PROMPTS)))
    registry = Registry(settings.tracking_uri, settings.params.registry.model_name, settings.paths.mlflow_artifacts)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = save_model(result.model, Path(tmp) / "imagebind")
        save_json(model_dir / "input_spec.json", {**asdict(_input_spec(settings)), "sample_rate": settings.params.clean.sample_rate})
        params = {**{f"model.{k}": v for k, v in asdict(model_config).items()},
                  **{f"train.{k}": v for k, v in asdict(train_config).items()},
                  "data.batches": ",".join(batches), "data.rows": len(data), "data.labelled": int((label >= 0).sum())}
        logged = log_training_run(registry, model_dir, params, result.history, {**(label_metrics or {}), **metrics},
                                  {"golden_version": golden_version, "flow_run": run_name}, run_name)
    return TrainOutcome(logged.run_id, logged.model_uri, metrics, batches, len(data), int((label >= 0).sum()), result.seconds, golden_version)


def stage_register(settings: Settings, train: TrainOutcome, lineage: dict[str, str]) -> str:
    from models.registry import LoggedModel, Registry, register_candidate

    registry = Registry(settings.tracking_uri, settings.params.registry.model_name, settings.paths.mlflow_artifacts)
    tags = {"training_batches": ",".join(train.training_batches), "golden_version": train.golden_version, **lineage}
    return register_candidate(registry, LoggedModel(train.mlflow_run_id, train.model_uri), tags)


def stage_gate(settings: Settings, version: str) -> GateDecision:
    """Challenger and champion, both loaded from the registry, on the same golden set."""
    from models.evaluate import DIGIT_PROMPTS, evaluate_model
    from models.registry import CHAMPION, Registry, load_version, promote, record_decision
    from models.text import encode_texts

    registry = Registry(settings.tracking_uri, settings.params.registry.model_name, settings.paths.mlflow_artifacts)
    golden, golden_version = build_golden_set(settings)
    prompts = encode_texts(list(DIGIT_PROMPTS))
    champion = registry.alias_version(CHAMPION)
    challenger_metrics = evaluate_model(load_version(registry, version), golden, prompts)
    champion_metrics = evaluate_model(load_version(registry, champion), golden, prompts) if champion else None
    thresholds = {k: MetricThreshold(v.min, v.max, v.max_drop) for k, v in settings.params.gate.thresholds.items()}
    decision = decide(challenger_metrics, champion_metrics, thresholds)
    decision.lineage = {"challenger_version": version, "champion_version": champion, "golden_version": golden_version}
    record_decision(registry, version, decision.to_dict())
    if decision.passed:
        promote(registry, version, expected_champion=champion)
    decision.lineage["champion_after"] = registry.alias_version(CHAMPION)
    return decision


def stage_monitor(settings: Settings, batch_id: str, run_dir: Path) -> dict[str, Any]:
    """Drift of this batch's features against the champion's training window (this batch excluded)."""
    from features.store import load_feature_frame
    from models.registry import CHAMPION, Registry
    from monitoring.drift import DriftParams, compute_drift
    from monitoring.workspace import save_drift

    registry = Registry(settings.tracking_uri, settings.params.registry.model_name, settings.paths.mlflow_artifacts)
    champion = registry.alias_version(CHAMPION)
    if champion is None:
        return {"status": "no_champion"}
    window = registry.version_tags(champion).get("training_batches", "").split(",")
    reference_batches = [b for b in window if b and b != batch_id]
    if not reference_batches:
        return {"status": "no_reference", "detail": "the champion was trained on this batch only", "champion": champion}
    reference = load_feature_frame(settings.paths.feast, reference_batches)
    current = load_feature_frame(settings.paths.feast, [batch_id])
    numeric = [c for c in NUMERIC_FEATURES if reference[c].notna().any() and current[c].notna().any()]
    result = compute_drift(reference, current, numeric, list(CATEGORICAL_FEATURES),
                           DriftParams(drift_share=settings.params.monitor.drift_share))
    html = run_dir / "drift_report.html"
    snapshot_id = save_drift(settings.paths.evidently, settings.params.registry.model_name, result, html_path=html)
    return {
        "status": "drift" if result.drift_detected else "no_drift",
        "drift_detected": result.drift_detected,
        "drifted_share": result.drifted_share,
        "drifted_columns": result.drifted_columns,
        "reference_batches": reference_batches,
        "reference_rows": result.reference_rows,
        "current_rows": result.current_rows,
        "champion": champion,
        "report": str(html),
        "evidently_snapshot": snapshot_id,
    }


# ---- the wiring, written once for both drivers -------------------------------------------


def write_summary(settings: Settings, record: RunRecord) -> Path:
    path = settings.paths.runs / record.run_id / "summary.json"
    save_json(path, asdict(record))
    return path


def run_stages(settings: Settings, source: Path, call: StageCall = call_directly, run_id: str | None = None) -> RunRecord:
    """The lifecycle on one landing batch: data stages, train, register, gate, monitor.

    The summary is written whatever happens; a failing stage marks the run failed and re-raises.
    """
    record = RunRecord(run_id=run_id or new_run_id(), source=str(source))
    run_dir = settings.paths.runs / record.run_id
    run_dir.mkdir(parents=True, exist_ok=True)

    def timed(name: str, fn: Callable[..., Any], *args: Any) -> Any:
        started = time.perf_counter()
        try:
            return call(name, fn, *args)
        except BaseException:
            record.failed_stage = name
            raise
        finally:
            record.seconds[name] = round(time.perf_counter() - started, 3)

    try:
        ingest = timed("ingest", stage_ingest, settings, source)
        record.batch_id = ingest.batch_id
        _record_report(settings, record, ingest.report)
        clean = timed("clean", stage_clean, settings, ingest.batch_dir)
        _record_report(settings, record, clean.report)
        accepted, report, statistics = timed("validate", stage_validate, settings, ingest.batch_id, clean.rows)
        _record_report(settings, record, report)
        record.stages["validate"]["expectations"] = statistics
        _record_report(settings, record, timed("transform", stage_transform, settings, ingest.batch_id, clean.batch_dir, accepted))
        _record_report(settings, record, timed("label", stage_label, settings, ingest.batch_id, accepted, clean.batch_dir))
        train = timed("train", stage_train, settings, record.run_id, record.stages["label"].get("metrics"))
        record.train = asdict(train)
        lineage = {"data_version": ingest.batch_id, "flow_run": record.run_id,
                   "validation": json.dumps(statistics, default=str)[:5000], "feature_service": "training"}
        version = timed("register", stage_register, settings, train, lineage)
        record.model = {"name": settings.params.registry.model_name, "version": version}
        decision = timed("gate", stage_gate, settings, version)
        record.gate = decision.to_dict()
        record.model["champion"] = decision.lineage.get("champion_after")
        record.monitor = timed("monitor", stage_monitor, settings, ingest.batch_id, run_dir)
        record.status = "succeeded"
    except BaseException as err:
        record.status = "failed"
        record.error = f"{type(err).__name__}: {err}"
        raise
    finally:
        record.finished_at = datetime.now(timezone.utc).isoformat()
        write_summary(settings, record)
    return record
