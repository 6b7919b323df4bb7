"""The `imagebind` family: the multimodal binding model, trained on the window's every modality and
judged zero-shot by the task's class prompts (models.imagebind, models.train, models.evaluate).

This module wires settings, the stores and MLflow around the pure model code, like a plug-in family
would: it receives exactly what `models.family.ModelFamily` hands any family.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from features.io import save_json
from models.families import IMAGEBIND_FAMILY, IMAGEBIND_METRICS
from models.family import GoldenScores, TrainOutcome, TrainRequest

log = logging.getLogger(__name__)


class ImageBindFamily:
    """ImageBind: embed, zero-shot classify and search every modality it has a tower for."""

    name = IMAGEBIND_FAMILY

    def metric_directions(self) -> dict[str, str]:
        return IMAGEBIND_METRICS

    def owns(self, model: object) -> bool:
        from models.imagebind import ImageBind

        return isinstance(model, ImageBind)

    def train(self, request: TrainRequest) -> TrainOutcome:
        return train_imagebind(request)

    def score_golden(self, models: dict[str, Any], golden, settings) -> GoldenScores:
        from models.gate_scoring import golden_groups, score_models
        from models.text import encode_class_prompts

        scores = score_models(models, golden, encode_class_prompts(settings.task.prompts), settings.params.gate.latency_items)
        return GoldenScores(scores, golden_groups(golden, settings.task.classes), len(golden.label))

    def golden_plots(self, model, golden, task) -> tuple[dict[str, Any], dict[str, Any]]:
        """Optional member: each modality's zero-shot class per golden row, and recall@k per query→gallery
        pair of the joint space (the DVC plots of the train stage)."""
        from models.evaluate import evaluated_modalities, predict_zero_shot
        from models.imagebind import VISION
        from models.retrieval import embed_eval_data, recall_curve
        from models.text import encode_class_prompts

        prompts = encode_class_prompts(task.prompts)
        given = {"image": (VISION, golden.image), **{m: (m, golden.bound()[m]) for m in evaluated_modalities(model, golden)}}
        predicted = {name: predict_zero_shot(model, modality, values, prompts)[0] for name, (modality, values) in given.items()}
        joint = embed_eval_data(model, golden, prompts)
        return predicted, {f"{query}_to_{gallery}": recall_curve(joint, query, gallery) for query, gallery in joint.pairs()}

    def labelling_votes(self, model, shards: Iterable[Any], task):
        """Zero-shot predictions of every modality the champion embeds, one vote column each."""
        from features.label import ModelVotes
        from models.evaluate import predict_zero_shot
        from models.text import encode_class_prompts
        from monitoring.observations import MODALITY_KEYS, monitored_modalities

        prompts = encode_class_prompts(task.prompts)
        kinds = monitored_modalities(model)
        sample_ids: list[str] = []
        predicted: dict[str, list[np.ndarray]] = {kind: [] for kind in kinds}
        confidence: dict[str, list[np.ndarray]] = {kind: [] for kind in kinds}
        for inputs in shards:  # one shard in memory at a time
            sample_ids.extend(inputs.sample_id)
            for kind in kinds:
                label, conf = predict_zero_shot(model, MODALITY_KEYS[kind], getattr(inputs, kind), prompts)
                predicted[kind].append(label)
                confidence[kind].append(np.where(getattr(inputs, f"has_{kind}"), conf, 0.0))  # a missing file never votes
        return ModelVotes(sample_ids, {k: np.concatenate(v) for k, v in predicted.items()},
                          {k: np.concatenate(v) for k, v in confidence.items()})

    def serving_spec(self, model, task, lake: Callable[[], Iterable[tuple[str, Any]]]):
        from models.serving.scoring import imagebind_serving_spec

        return imagebind_serving_spec(model, task, lake)

    def observations(self, model, task):
        from models.text import encode_class_prompts
        from monitoring.observations import build_monitor_data

        prompts = encode_class_prompts(task.prompts)
        return lambda features, inputs, labels: build_monitor_data(features, inputs, model, prompts, labels)

    def skipped_checks(self, model) -> dict[str, dict[str, Any]]:
        """The modalities the task's data never had (so the champion has no tower for) are not applicable."""
        from monitoring.observations import MODALITY_KEYS, monitored_modalities

        has = set(monitored_modalities(model))
        return {"not_applicable": {
            "status": "skipped", "items": {kind: f"the champion has no {kind} tower: the task's data carries no {kind}"
                                           for kind in MODALITY_KEYS if kind not in has}}}

    def train_cache_inputs(self, settings, data_versions: dict[str, str]) -> dict[str, Any]:
        """This family's code; and a LoRA fine-tune of the champion (train.imagebind_lora) also depends on which
        version it starts from (not simply @champion: after this training was promoted, @champion is its own result)."""
        from flows.exactly_once import training_start
        from flows.families import source_digest

        start = ({"start_from": training_start(settings, data_versions)}
                 if settings.params.train.imagebind_lora.enabled else {})
        return {"family_code": source_digest(__name__), **start}


def train_imagebind(request: TrainRequest) -> TrainOutcome:
    """Train on every accepted batch so far (labels from the feature store), evaluate on the golden set,
    log the run and the model to MLflow (with this batch's labelling metrics); `data_version` is the
    lake's `lake/inputs@md5`, logged as the run's dataset input."""
    from flows.model_stages import build_golden_set, training_window
    from flows.stage_cache import epoch_fault_points
    from flows import stage_config
    from flows.stage_config import input_spec, registry_for
    from models.artifacts import save_model, save_task
    from models.evaluate import evaluate_model
    from models.imagebind import config_modalities
    from models.inputs import modalities_present
    from models.registry import log_training_run
    from models.text import embed_texts, encode_class_prompts
    from models.tracking import EpochLogger, RunEvaluation, TrainingDataset, config_params, start_training_run
    from models.train import STAGE_IMAGE_TEXT, train_imagebind as fit, training_data_from_inputs

    settings, run_name, checkpoint_dir = request.settings, request.run_name, request.checkpoint_dir
    window = training_window(settings, captions_only=False)
    batches, inputs, label = window.batches, window.inputs, window.label
    data = training_data_from_inputs(inputs, embed_texts(list(inputs.caption)), label)
    tr = settings.params.train
    # The towers follow the data: vision and text always, plus each modality the window carries.
    model_config = stage_config.imagebind_config(tr, input_spec(settings),
                                                 modalities=config_modalities(modalities_present(inputs)))
    # a checkpoint per epoch, resumed from by a re-run (flows/steps.py keys the folder)
    train_config = stage_config.train_config(tr, settings.params.clean.sample_rate, checkpoint_dir=str(checkpoint_dir) if checkpoint_dir else None)
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
        logger = EpochLogger(run.info.run_id, train_config, len(data))
        on_epoch = epoch_fault_points(logger, STAGE_IMAGE_TEXT, tr.epochs_stage1)
        result = fit(data, model_config, train_config, on_epoch=on_epoch, on_step_losses=logger.record_steps,
                     **({} if start is None else {"init_weights": start.weights, "lora": start.lora}))
        golden, golden_version = build_golden_set(settings)
        prompt_emb = encode_class_prompts(settings.task.prompts)
        metrics = evaluate_model(result.model, golden, prompt_emb)
        model_dir = save_model(result.model, Path(tmp) / "imagebind")
        save_task(model_dir, settings.task.to_dict())  # serving answers in these classes and prompts
        clean = settings.params.clean  # serving prepares raw audio as the clean stage did
        save_json(model_dir / "input_spec.json",
                  {**asdict(input_spec(settings)), "sample_rate": clean.sample_rate, "silence_db": clean.silence_db})
        params = {**config_params(model_config, train_config, None if start is None else start.lora),
                  "data.batches": ",".join(batches), "data.rows": len(data), "data.labelled": int((label >= 0).sum()),
                  "data.golden_excluded": window.golden_excluded, "data.modalities": ",".join(window.modalities),
                  "train.init": "scratch" if start is None else f"champion v{start.version}"}
        run_tags = {"golden_version": golden_version, "flow_run": run_name,
                    **({} if start is None else {"fine_tuned_from": start.version})}
        logged = log_training_run(registry, model_dir, params, result.history,
                                  {**(request.label_metrics or {}), **metrics}, run_tags, run_name,
                                  evaluation=RunEvaluation(result.model, golden, prompt_emb, settings.task.classes),
                                  dataset=TrainingDataset(list(inputs.sample_id), label, request.data_version))
    return TrainOutcome(logged.run_id, logged.model_uri, metrics, batches, len(data), int((label >= 0).sum()), result.seconds,
                        golden_version, window.golden_excluded)


@dataclass(frozen=True)
class ChampionStart:
    """Where a LoRA fine-tune of the champion starts: its version, weights and the adapters' settings."""

    version: str
    weights: dict[str, Any]
    lora: Any  # models.lora.LoraSettings


def champion_start(settings, model_config: Any) -> ChampionStart | None:
    """With `train.imagebind_lora.enabled` and an ImageBind @champion of this architecture: its weights
    and the adapters to fine-tune them with; None (train from scratch) otherwise, saying why."""
    from flows import stage_config
    from flows.stage_config import registry_for
    from models.imagebind import ImageBind
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
    lora = stage_config.lora_settings(options)
    log.info("train.imagebind_lora: fine-tuning @champion v%s through LoRA r=%d", version, options.r)
    return ChampionStart(str(version), champion.state_dict(), lora)
