"""The monitor stage: load the champion's reference window and a current window, run every check
(`monitoring.checks`), save the Evidently snapshots and HTML reports (the data drift; the class mix of the
predictions, by the task's class names), return the summary entry.

Reference: the batches the @champion version was trained on (its `training_batches` tag), so it
follows the alias when it moves; features from the feature store, inputs from the lake.
Current, for a batch: its *clean* rows (`lake/clean/<batch>`), features and model inputs computed
here. Validation is not in the way: a batch that validation rejected (a noisy source whose clips
grew twice as long) never reached the feature store, yet it is exactly what monitoring must see, so
the monitor reads what arrived, not what was accepted; quality checks also see the rows validation
quarantined. A batch a data stage rejected is monitored in the same run (`flows.pipeline`): its summary
entry and its Evidently snapshot say so (`batch_rejected`, the snapshot's name and tag).
Current, for the inference log: the records scored by the champion since the last
check (predictions and, through sample ids, delayed labels; the log keeps only an embedding's
leading dimensions, so embedding drift is judged on batches).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from features.io import save_json
from features.transform import CATEGORICAL_FEATURES, NUMERIC_FEATURES
from flows.settings import Settings
from flows.stage_config import input_spec, registry_for
from monitoring.checks import CheckParams, MonitorData, MonitorResult, run_checks
from monitoring.drift import DriftParams
from monitoring.model_drift import ModelDriftParams
from monitoring.quality import QualityParams

LOG_CHECKPOINT = "monitor/inference_log_checked.json"  # under FLYWHEEL_HOME: when the log was last checked


def check_params(settings: Settings) -> CheckParams:
    m = settings.params.monitor
    return CheckParams(
        drift=DriftParams(drift_share=m.drift_share, column_threshold=m.feature_threshold, distance_methods=True,
                          fast_path_rows=m.fast_path_rows, report_rows=m.report_rows,
                          noise_sigmas=m.noise_sigmas),
        model=ModelDriftParams(embedding_threshold=m.embedding_threshold, embedding_max_rows=m.embedding_max_rows,
                               prediction_threshold=m.prediction_threshold, min_rows=m.min_rows),
        quality=QualityParams(max_missing_increase=m.max_missing_increase, max_out_of_range_share=m.max_out_of_range_share,
                              max_accuracy_drop=m.max_accuracy_drop, accuracy_p_value=m.accuracy_p_value,
                              min_labelled_rows=m.min_labelled_rows))


def load_human_labels(settings: Settings, rows: pd.DataFrame) -> pd.Series:
    """sample_id -> human label: the manifest's labels in the clean rows, then labels imported later
    from review (the feature store's `labels` table, label_source == "human") on top."""
    labels = rows.set_index("sample_id")["label"].dropna() if "label" in rows.columns else pd.Series(dtype=float)
    import pyarrow as pa
    import pyarrow.compute as pc

    from features.store import read_feature_table

    ids = pa.array(pd.unique(rows["sample_id"].astype(str)), pa.string())
    human = (pc.field("label_source") == "human") & pc.field("sample_id").isin(ids)  # file by file
    stored = read_feature_table(settings.paths.feast, "labels", columns=["sample_id", "label"], where=human)  # none: empty
    imported = stored.set_index("sample_id")["label"]
    if len(imported):  # no empty part in a concat: pandas deprecates their effect on the result's dtype
        labels = pd.concat([labels, imported]) if len(labels) else imported
    return labels[~labels.index.duplicated(keep="last")].astype(float)


def load_clean_window(settings: Settings, batch_id: str) -> tuple[pd.DataFrame, Any, pd.Series]:
    """A batch as it arrived (clean rows, before validation): features, model inputs, human labels."""
    from features.clean import ROWS_NAME
    from features.transform import compute_sample_features
    from models.inputs import load_clean_inputs

    clean_dir = settings.paths.lake_clean / batch_id
    if not (clean_dir / ROWS_NAME).exists():
        raise FileNotFoundError(f"batch {batch_id!r} has no clean rows at {clean_dir / ROWS_NAME}; ingest and clean it first")
    rows = pd.read_parquet(clean_dir / ROWS_NAME)
    features = compute_sample_features(clean_dir, rows, batch_id)
    return features, load_clean_inputs(clean_dir, rows, input_spec(settings)), load_human_labels(settings, rows)


def load_training_window(settings: Settings, batches: list[str]) -> tuple[pd.DataFrame, Any, pd.Series]:
    """The champion's training batches: stored features, stored model inputs, human labels."""
    from features.clean import ROWS_NAME
    from features.store import load_feature_frame
    from models.inputs import ModelInputs, load_model_inputs

    features = load_feature_frame(settings.paths.feast, batches)
    inputs = ModelInputs.concat([load_model_inputs(settings.paths.batch_inputs(b)) for b in batches])
    rows = pd.concat([pd.read_parquet(settings.paths.lake_clean / b / ROWS_NAME, columns=["sample_id", "label"]) for b in batches])
    return features, inputs, load_human_labels(settings, rows)


def latest_clean_batch(settings: Settings) -> str:
    from features.clean import ROWS_NAME
    from features.ingest import list_ingested_batches

    batches = [b for b in list_ingested_batches(settings.paths.lake_raw) if (settings.paths.lake_clean / b / ROWS_NAME).exists()]
    if not batches:
        raise FileNotFoundError(f"no cleaned batch under {settings.paths.lake_clean}; run `flywheel run` first")
    return batches[-1]


def monitor_batch(settings: Settings, batch_id: str, run_dir: Path, rejection: dict[str, Any] | None = None
                  ) -> tuple[dict[str, Any], MonitorResult | None]:
    """Every check for one batch against the champion's training window (this batch excluded): the
    summary entry, and the result (None when there was nothing to compare against). `rejection`: the
    batch was refused by a data stage (`RunRecord.rejection`); the entry and the snapshot are marked."""
    from models.registry import CHAMPION

    registry = registry_for(settings)
    champion = registry.alias_version(CHAMPION)
    marked = {"batch_rejected": _rejection_mark(rejection)} if rejection else {}
    if champion is None:
        return {"status": "no_champion", "batch": batch_id, **marked,
                "detail": "no @champion yet: there is no training window to compare this batch with"}, None
    window = registry.version_tags(champion).get("training_batches", "").split(",")
    reference_batches = [b for b in window if b and b != batch_id]
    if not reference_batches:
        return {"status": "no_reference", "detail": "the champion was trained on this batch only", "champion": champion,
                **marked}, None
    loaded = _load_champion(settings, registry, champion)
    observe = loaded.family.observations(loaded.model, settings.task)
    ref_features, ref_inputs, ref_labels = load_training_window(settings, reference_batches)
    reference = observe(ref_features, ref_inputs, ref_labels)
    features, inputs, labels = load_clean_window(settings, batch_id)
    current = observe(features, inputs, labels)
    result = _skip_what_the_family_lacks(loaded, run_checks(reference, current, list(NUMERIC_FEATURES),
                                                             list(CATEGORICAL_FEATURES), check_params(settings),
                                                             classes=settings.task.classes))
    return _summarise(settings, result, run_dir, champion, {"batch": batch_id, "reference_batches": reference_batches, **marked}), result


def _rejection_mark(rejection: dict[str, Any]) -> dict[str, Any]:
    """What a monitor entry keeps of a rejection: enough to tell it from an accepted batch and why."""
    return {key: rejection[key] for key in ("stage", "expectation", "observed", "bound") if key in rejection}


def monitor_inference_log(settings: Settings, run_dir: Path) -> dict[str, Any]:
    """Prediction and performance drift of the champion's logged predictions since the last check."""
    from models.registry import CHAMPION
    from models.serving.inference_log import load_inference_log

    registry = registry_for(settings)
    champion = registry.alias_version(CHAMPION)
    if champion is None:
        return {"status": "no_champion"}
    checkpoint = settings.paths.home / LOG_CHECKPOINT
    since = json.loads(checkpoint.read_text())["checked_until"] if checkpoint.exists() else None
    checked_until = time.time()
    log = load_inference_log(settings.paths.inference, since)
    if not log.empty:
        log = log[(log["model_version"].astype(str) == str(champion)) & (log["status"] == 200) & log["prediction"].notna()]
    if log.empty:
        return {"status": "no_records", "since": since, "champion": champion}
    batches = [b for b in registry.version_tags(champion).get("training_batches", "").split(",") if b]
    ref_features, ref_inputs, ref_labels = load_training_window(settings, batches)
    loaded = _load_champion(settings, registry, champion)
    reference = loaded.family.observations(loaded.model, settings.task)(ref_features, ref_inputs, ref_labels)
    reference.embeddings, reference.features = {}, None  # the log has neither to compare with
    labels = load_human_labels(settings, pd.DataFrame({"sample_id": log.get("sample_id", pd.Series(dtype=str)).dropna().unique()}))
    current = MonitorData()
    for modality, part in log[log["modality"].isin(list(reference.predictions))].groupby("modality"):
        current.predictions[modality] = part["prediction"].to_numpy(dtype=np.int64)
        if "sample_id" in part:
            known = labels.reindex(part["sample_id"]).to_numpy(dtype=float)
            current.correct[modality] = (current.predictions[modality][~np.isnan(known)] == known[~np.isnan(known)]).astype(float)
    result = _skip_what_the_family_lacks(loaded, run_checks(reference, current, list(NUMERIC_FEATURES),
                                                             list(CATEGORICAL_FEATURES), check_params(settings),
                                                             classes=settings.task.classes))
    save_json(checkpoint, {"checked_until": checked_until})
    return _summarise(settings, result, run_dir, champion, {"inference_records": len(log), "since": since,
                                                            "reference_batches": batches})


def _load_champion(settings: Settings, registry, champion: str):
    """The champion's model and family (`models.pyfunc.RegisteredModel`): its family says how monitoring sees
    a window through it (`observations`) and which checks do not apply to it (`skipped_checks`)."""
    from flows.families import configured_family
    from models.pyfunc import load_registered

    return load_registered(registry, champion, [configured_family(settings)])


def _skip_what_the_family_lacks(loaded, result: MonitorResult) -> MonitorResult:
    """The checks the champion's family says do not apply (a lora champion's embedding drift; an ImageBind
    champion's modalities the task's data never had) are reported as skipped with the reason."""
    result.checks.update(loaded.family.skipped_checks(loaded.model))
    return result


def _other_ui_links(settings: Settings, run_id: str, champion: str | None) -> list[tuple[str, str]]:
    """Where the other UIs show this run, for its snapshots: its Prefect flow run and Data Docs validation page
    (from the run's summary, which run_table writes with the flow run's page before any stage) and the model
    version the check was made against."""
    from flows.model_cards import run_pages
    from flows.run_links import data_docs_url, other_ui_links

    pages = run_pages(settings, run_id)
    links = {"prefect_flow_run": pages.get("prefect_flow_run", "")}
    if pages.get("data_docs_page"):
        links["data_docs"] = data_docs_url(pages["data_docs_page"])
    return other_ui_links(settings, links, str(champion) if champion else None, leave_out="evidently_snapshot")


def _summarise(settings: Settings, result: MonitorResult, run_dir: Path, champion: str, extra: dict[str, Any]) -> dict[str, Any]:
    from monitoring.workspace import project_id, save_drift, save_predictions

    run_dir.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {"status": "drift" if result.drift_detected else "no_drift", "champion": champion,
                               **extra, **result.to_summary()}
    rejected = extra.get("batch_rejected")
    where = dict(batch_id=extra.get("batch"),
                 rejected_by=f"{rejected['stage']}: {rejected.get('expectation')}" if rejected else None)
    project, classes = settings.params.registry.model_name, settings.task.classes
    # The run folder is runs/<run id>: the snapshot names the run and the model version it checked against.
    where["lineage"] = {"run": run_dir.name, "model": project, "model_version": str(champion)}
    where["links"] = _other_ui_links(settings, run_dir.name, champion)
    if result.data_drift is not None:
        html = run_dir / "drift_report.html"
        summary["evidently_snapshot"] = save_drift(settings.paths.evidently, project, result.data_drift, classes,
                                                   html_path=html, **where)
        summary.update(report=str(html), drifted_share=result.data_drift.drifted_share,
                       drifted_columns=result.data_drift.drifted_columns,
                       reference_rows=result.data_drift.reference_rows, current_rows=result.data_drift.current_rows)
    if result.prediction_report is not None:
        html = run_dir / "predictions_report.html"
        summary["evidently_predictions_snapshot"] = save_predictions(
            settings.paths.evidently, project, result.prediction_report, classes, html_path=html, **where)
        summary["predictions_report"] = str(html)
    if "evidently_snapshot" in summary:
        summary["evidently_project_id"] = project_id(settings.paths.evidently, project)
    save_json(run_dir / "monitor.json", summary)
    return summary
