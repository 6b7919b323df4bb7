"""The model stages: train, register, gate, monitor, and the champion's votes for labelling."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from features.clean import clean_batch
from features.demo import generate_demo_batch
from features.ingest import ingest_batch, list_ingested_batches
from features.io import save_json
from flows.settings import Settings
from flows.stage_config import clean_params, feast_services, gate_policy, input_spec, registry_for
from models.families import LORA_FAMILY
from models.gate import GateDecision
from models.inputs import ModelInputs, build_model_inputs, has_model_inputs, iter_model_inputs, load_model_inputs, save_model_inputs

log = logging.getLogger(__name__)


def champion_votes(settings: Settings, batch_id: str):
    """The champion's zero-shot image and audio predictions on this batch (a lora champion: its caption
    classes, a `text` vote); None before the first champion."""
    from features.label import ModelVotes
    from models.families import family_of
    from models.evaluate import DIGIT_PROMPTS, predict_zero_shot
    from models.imagebind import AUDIO, VISION
    from models.registry import CHAMPION, load_version
    from models.text import encode_texts

    registry = registry_for(settings)
    version = registry.alias_version(CHAMPION)
    if version is None:
        return None
    model = load_version(registry, version)
    if family_of(model) == LORA_FAMILY:
        from flows.lora_stages import caption_votes

        return caption_votes(model, iter_model_inputs(settings.paths.batch_inputs(batch_id)))
    prompts = encode_texts(list(DIGIT_PROMPTS))
    sample_ids: list[str] = []
    predicted: dict[str, list[np.ndarray]] = {"image": [], "audio": []}
    confidence: dict[str, list[np.ndarray]] = {"image": [], "audio": []}
    for inputs in iter_model_inputs(settings.paths.batch_inputs(batch_id)):  # one shard in memory at a time
        sample_ids.extend(inputs.sample_id)
        for name, modality, values, present in (("image", VISION, inputs.image, inputs.has_image),
                                                ("audio", AUDIO, inputs.audio, inputs.has_audio)):
            label, conf = predict_zero_shot(model, modality, values, prompts)
            predicted[name].append(label)
            confidence[name].append(np.where(present, conf, 0.0))  # a missing file never votes
    return ModelVotes(sample_ids, {k: np.concatenate(v) for k, v in predicted.items()},
                      {k: np.concatenate(v) for k, v in confidence.items()})


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


def build_golden_set(settings: Settings):
    """The fixed, fully labelled golden set: generated once from the demo source's held-out images,
    cleaned like any batch, never used in training. Its version is its DVC hash in the lake
    (`golden/<name>@<md5>.dir`, tracked and pushed when first built), so a decision names the exact rows.

    The folder is built whole in a staging sibling and published in one rename, and counts as pushed only
    once the push is recorded: a kill at any moment leaves no folder (the next call builds it afresh and
    sweeps the dead build's staging folder) or the finished one, whose tracking and push the next call completes."""
    from filelock import FileLock

    from features.lake_versioning import open_lake
    from models.evaluate import EvalData

    g, spec = settings.params.gate, input_spec(settings)
    name = f"seed{g.golden_seed}-n{g.golden_samples}-s{spec.image_size}-m{spec.n_mels}-f{spec.audio_frames}"
    folder = settings.paths.golden / name
    archive = folder / "inputs.npz"
    labels_path = folder / "labels.json"
    relative = folder.relative_to(settings.paths.home).as_posix()
    folder.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder.with_name(name + ".lock"))):  # two gates at once build it once
        if not labels_path.exists():  # published with the rest: only a finished folder has it
            _write_golden_folder(settings, folder)
        lake = open_lake(settings.paths.home, settings.lake_remote, settings.lake_endpoint)
        version = lake.pushed_version(relative) or lake.track_and_push(relative)
    inputs = load_model_inputs(archive)
    labels = np.array(json.loads(labels_path.read_text()), dtype=np.int64)
    return (EvalData(image=inputs.image, audio=inputs.audio, label=labels, voice=list(inputs.voice),
                     caption=list(inputs.caption)), version.to_tag())


def _write_golden_folder(settings: Settings, folder: Path) -> None:
    """Landing batch, its lake snapshot and clean rows, model inputs and labels, into a staging sibling of
    `folder` published over it at the end (an unfinished folder an older version left is replaced)."""
    from features.atomic import staged_directory

    g, spec = settings.params.gate, input_spec(settings)
    with staged_directory(folder) as staging:
        generate_demo_batch(staging / "landing", samples=g.golden_samples, seed=g.golden_seed, fault_rate=0.0,
                            label_rate=1.0, split="golden")
        raw = ingest_batch(staging / "landing", staging / "raw")
        cleaned = clean_batch(raw.batch_dir, staging / "clean", clean_params(settings))
        rows = cleaned.rows
        rows = rows[rows["image"].notna() & rows["audio"].notna() & rows["label"].notna()].reset_index(drop=True)
        save_model_inputs(staging / "inputs.npz", build_model_inputs(cleaned.batch_dir, rows, spec))
        save_json(staging / "labels.json", [int(x) for x in rows["label"]])


def _training_batches(settings: Settings) -> list[str]:
    """The training window: every ingested batch with model inputs, in ingestion order."""
    return [b for b in list_ingested_batches(settings.paths.lake_raw)
            if has_model_inputs(settings.paths.batch_inputs(b))]


def training_window(settings: Settings, captions_only: bool) -> tuple[list[str], ModelInputs, np.ndarray]:
    """The window's batches, its rows with every modality a family trains on (image, audio and
    caption; or the caption alone) and their trusted labels from the feature store (-1: unknown)."""
    from features.store import get_training_frame

    batches = _training_batches(settings)
    inputs = ModelInputs.concat([load_model_inputs(settings.paths.batch_inputs(b)) for b in batches])
    keep = inputs.has_caption if captions_only else inputs.has_image & inputs.has_audio & inputs.has_caption
    inputs = inputs.take(np.flatnonzero(keep))
    if len(inputs) < 2:
        needed = "a caption" if captions_only else "image, audio and caption"
        raise ValueError(f"only {len(inputs)} rows with {needed}: too few to train")
    entity = pd.DataFrame({"sample_id": inputs.sample_id, "event_timestamp": pd.Timestamp.now(tz="UTC")})
    labelled = get_training_frame(settings.paths.feast, entity, services=feast_services(settings))
    labelled = labelled.drop_duplicates("sample_id").set_index("sample_id")
    # Labels the label model is unsure of stay unknown to training (they wait in the review queue).
    trusted = labelled["label"].where(labelled["label_confidence"].fillna(0) >= settings.params.label.review_threshold)
    return batches, inputs, trusted.reindex(inputs.sample_id).fillna(-1).to_numpy(dtype=np.int64)


def stage_train(settings: Settings, run_name: str, label_metrics: dict[str, float] | None = None,
                data_version: str | None = None, checkpoint_dir: Path | None = None) -> TrainOutcome:
    """Train on every accepted batch so far (labels from the feature store), evaluate on the golden set,
    log the run and the model to MLflow (with this batch's labelling metrics); `data_version` is the
    lake's `lake/inputs@md5`, logged as the run's dataset input."""
    import tempfile

    from models.artifacts import save_model
    from models.evaluate import DIGIT_PROMPTS, evaluate_model
    from models.imagebind import ImageBindConfig
    from models.registry import log_training_run
    from models.tracking import EpochLogger, RunEvaluation, TrainingDataset, config_params, start_training_run
    from models.text import encode_texts
    from models.train import TrainConfig, TrainingData, train_imagebind

    if settings.params.train.family == LORA_FAMILY:
        from flows.lora_stages import stage_train_lora

        return stage_train_lora(settings, run_name, label_metrics, data_version)
    batches, inputs, label = training_window(settings, captions_only=False)
    data = TrainingData(image=inputs.image, audio=inputs.audio, text_emb=encode_texts(list(inputs.caption)), label=label)
    t, tr = settings.params.transform, settings.params.train
    model_config = ImageBindConfig(embed_dim=tr.embed_dim, image_size=t.image_size, audio_n_mels=t.n_mels,
                                   audio_frames=t.audio_frames)
    train_config = TrainConfig(seed=tr.seed, batch_size=tr.batch_size, epochs_stage1=tr.epochs_stage1,
                               epochs_stage2=tr.epochs_stage2, lr=tr.lr, weight_decay=tr.weight_decay,
                               label_aware=tr.label_aware, grad_clip=tr.grad_clip,
                               # a checkpoint per epoch, resumed from by a re-run (flows/pipeline.py keys the folder)
                               checkpoint_dir=str(checkpoint_dir) if checkpoint_dir else None)
    registry = registry_for(settings)
    start = champion_start(settings, model_config)
    if start is not None:
        train_config = replace(train_config, epochs_stage1=tr.imagebind_lora.epochs_stage1,
                               epochs_stage2=tr.imagebind_lora.epochs_stage2, lr=tr.imagebind_lora.lr)
    # The run is open while training, so MLflow samples system metrics and the epochs appear live.
    # The checkpoint folder names the attempt: a re-run closes the run a killed attempt left open.
    tags = {"flow_run": run_name, **({"checkpoint_dir": str(checkpoint_dir)} if checkpoint_dir else {})}
    with start_training_run(registry.experiment_id(), run_name, tags) as run, \
            tempfile.TemporaryDirectory() as tmp:
        from flows.stage_cache import epoch_fault_points
        from models.train import STAGE_IMAGE_TEXT

        logger = EpochLogger(run.info.run_id, train_config, len(data))
        on_epoch = epoch_fault_points(logger, STAGE_IMAGE_TEXT, tr.epochs_stage1)
        result = train_imagebind(data, model_config, train_config, on_epoch=on_epoch, on_step_losses=logger.record_steps,
                                 **({} if start is None else {"init_weights": start.weights, "lora": start.lora}))
        golden, golden_version = build_golden_set(settings)
        prompt_emb = encode_texts(list(DIGIT_PROMPTS))
        metrics = evaluate_model(result.model, golden, prompt_emb)
        model_dir = save_model(result.model, Path(tmp) / "imagebind")
        clean = settings.params.clean  # serving prepares raw audio as the clean stage did
        save_json(model_dir / "input_spec.json",
                  {**asdict(input_spec(settings)), "sample_rate": clean.sample_rate, "silence_db": clean.silence_db})
        params = {**config_params(model_config, train_config, None if start is None else start.lora),
                  "data.batches": ",".join(batches), "data.rows": len(data), "data.labelled": int((label >= 0).sum()),
                  "train.init": "scratch" if start is None else f"champion v{start.version}"}
        run_tags = {"golden_version": golden_version, "flow_run": run_name,
                    **({} if start is None else {"fine_tuned_from": start.version})}
        logged = log_training_run(registry, model_dir, params, result.history, {**(label_metrics or {}), **metrics},
                                  run_tags, run_name,
                                  evaluation=RunEvaluation(result.model, golden, prompt_emb),
                                  dataset=TrainingDataset(list(inputs.sample_id), label, data_version))
    return TrainOutcome(logged.run_id, logged.model_uri, metrics, batches, len(data), int((label >= 0).sum()), result.seconds, golden_version)


@dataclass(frozen=True)
class ChampionStart:
    """Where a LoRA fine-tune of the champion starts: its version, weights and the adapters' settings."""

    version: str
    weights: dict[str, Any]
    lora: Any  # models.lora.LoraSettings


def champion_start(settings: Settings, model_config: Any) -> ChampionStart | None:
    """With `train.imagebind_lora.enabled` and an ImageBind @champion of this architecture: its weights
    and the adapters to fine-tune them with; None (train from scratch) otherwise, saying why."""
    from models.imagebind import ImageBind
    from models.lora import LoraSettings
    from models.registry import CHAMPION, load_version

    options = settings.params.train.imagebind_lora
    if not options.enabled:
        return None
    registry = registry_for(settings)
    version = registry.alias_version(CHAMPION)
    if version is None:
        log.info("train.imagebind_lora: no @champion yet, training from scratch")
        return None
    champion = load_version(registry, version)
    if not isinstance(champion, ImageBind):
        raise ValueError(f"train.imagebind_lora: @champion v{version} of {registry.model_name} is not an ImageBind "
                         f"({type(champion).__name__}); fine-tune an ImageBind champion or set enabled: false")
    if champion.config != model_config:
        differ = sorted(k for k, v in champion.config.to_dict().items() if model_config.to_dict().get(k) != v)
        log.warning("train.imagebind_lora: @champion v%s has another architecture (%s), training from scratch",
                    version, ", ".join(differ))
        return None
    lora = LoraSettings(r=options.r, alpha=options.alpha, dropout=options.dropout, train_heads=options.train_heads)
    log.info("train.imagebind_lora: fine-tuning @champion v%s through LoRA r=%d", version, options.r)
    return ChampionStart(str(version), champion.state_dict(), lora)


def stage_register(settings: Settings, train: TrainOutcome, lineage: dict[str, str]) -> str:
    from models.registry import LoggedModel, register_candidate

    registry = registry_for(settings)
    tags = {"training_batches": ",".join(train.training_batches), "golden_version": train.golden_version,
            "training_run": train.mlflow_run_id, "family": settings.params.train.family, **lineage}
    return register_candidate(registry, LoggedModel(train.mlflow_run_id, train.model_uri), tags)


LINEAGE_TAGS = ("data_version", "batch", "feature_service", "flow_run", "training_batches", "validation")


def evaluate_gate(settings: Settings, version: str, champion: str | None) -> GateDecision:
    """Challenger and champion, both loaded from the registry, scored on the same golden set in one
    process (latency interleaved), judged by params.yaml `gate:`; nothing is written."""
    from models.evaluate import DIGIT_PROMPTS
    from models.gate import decide
    from models.gate_scoring import golden_groups, score_models
    from models.registry import load_version
    from models.text import encode_texts

    if champion == str(version):
        raise ValueError(f"version {version} is @champion already: nothing to compare")
    registry = registry_for(settings)
    golden, golden_version = build_golden_set(settings)
    models = {"challenger": load_version(registry, version)}
    if champion is not None:
        models["champion"] = load_version(registry, champion)
    family = _one_family(registry.model_name, {"challenger": version, "champion": champion}, models)
    if family == LORA_FAMILY:
        from flows.lora_stages import score_lora_family

        scores, groups, golden_rows = score_lora_family(settings, models, golden)
    else:
        scores = score_models(models, golden, encode_texts(list(DIGIT_PROMPTS)), settings.params.gate.latency_items)
        groups, golden_rows = golden_groups(golden), len(golden.label)
    decision = decide(scores["challenger"], scores.get("champion"), gate_policy(settings, family), groups)
    mv = registry.client().get_model_version(registry.model_name, version)
    tags = dict(mv.tags)
    decision.lineage = {"challenger_version": str(version), "champion_version": champion, "golden_version": golden_version,
                        "golden_rows": golden_rows, "family": family, "training_run": mv.run_id,
                        **{k: tags[k] for k in LINEAGE_TAGS if k in tags}}
    return decision


def _one_family(model_name: str, versions: dict[str, str | None], models: dict[str, Any]) -> str:
    """The family challenger and champion share; two families are never compared."""
    from models.families import family_of

    families = {role: family_of(model) for role, model in models.items()}
    if len(set(families.values())) > 1:
        raise ValueError(
            f"{model_name}: challenger v{versions['challenger']} (family {families['challenger']}) and @champion "
            f"v{versions['champion']} (family {families['champion']}) differ; the gate compares a champion only with its "
            "own family. Leave params.yaml registry.model_name null (one registered model per family, "
            "flywheel-<family>) or promote by hand with `flywheel promote VERSION --force --reason …`")
    return families["challenger"]


def stage_gate(settings: Settings, version: str, flow_run: str | None = None) -> GateDecision:
    """Gate `version` against the current champion, record the decision on the version, and promote it
    if it passed, compare-and-set: StaleChampion if the champion moved meanwhile (the task's retry
    then gates again against the new champion)."""
    from models.registry import CHAMPION, Actor, StaleChampion, promote, record_decision

    registry = registry_for(settings)
    champion = registry.alias_version(CHAMPION)
    decision = evaluate_gate(settings, version, champion)
    decision.lineage["gate_flow_run"] = flow_run
    decision.lineage["decision_artifact"] = record_decision(registry, version, decision.to_dict())
    if decision.passed:
        try:
            promote(registry, version, expected_champion=champion,
                    actor=Actor(reason=f"gate passed: {decision.reason}", flow_run=flow_run))
        except StaleChampion as err:
            registry.client().set_model_version_tag(registry.model_name, version, "gate.promotion", f"stale: {err}"[:5000])
            raise
    decision.lineage["champion_after"] = registry.alias_version(CHAMPION)
    return decision


def stage_monitor(settings: Settings, batch_id: str, run_dir: Path, rejection: dict[str, Any] | None = None) -> dict[str, Any]:
    """Every monitoring check of this batch (as cleaned, so a batch validation rejected is seen too)
    against the champion's training window, this batch excluded: see flows/monitor_stage.py.
    `rejection`: a data stage refused the batch (the run summary's `rejection`); the results say so."""
    from flows.monitor_stage import monitor_batch
    from monitoring.reports import log_drift_run

    summary, result = monitor_batch(settings, batch_id, run_dir, rejection)
    if result is not None and result.data_drift is not None:
        summary["evidently_project"] = settings.params.registry.model_name  # one Evidently project per registered model
        rejected = {"batch_rejected": f"{rejection['stage']}: {rejection['expectation']}"} if rejection else {}
        summary["mlflow_run"] = log_drift_run(registry_for(settings), batch_id, summary["champion"], result.data_drift,
                                              Path(summary["report"]), summary["reference_batches"], rejected)
    return summary
