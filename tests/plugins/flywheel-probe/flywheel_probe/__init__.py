"""`probe`: a flywheel model family shipped as its own package, the baseline a fine-tune is compared with.

A logistic-regression head on the frozen MiniLM embedding of each caption. It implements
`models.family.ModelFamily` with flywheel's public pieces only (the training window, the golden set,
the MLflow registry, the serving spec, the monitoring observations) and is found by the entry point
this package declares (`train.family: probe`) or by import path (`flywheel_probe:LinearProbeFamily`).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd

from flywheel_probe.model import FAMILY, LinearProbe, fit_probe, load_probe, save_probe
from models.families import BUDGET_DIRECTIONS, CAPTION_METRIC
from models.family import GoldenScores, TrainOutcome, TrainRequest
from models.gate import HIGHER

ARTIFACT = "probe"  # the model folder's key in the pyfunc's artifacts
REGULARISATION = 1.0  # sklearn's C: inverse L2 strength
NO_EMBEDDINGS = "the champion is a linear probe: it exposes no embedding space; its classes are checked as text"


class ProbePyfunc(mlflow.pyfunc.PythonModel):
    """`text` in; `label`, `class_index`, `confidence` out. Keeps `.model`, `.task` and `.family` as flywheel reads them."""

    def load_context(self, context) -> None:
        from models.artifacts import load_task

        directory = Path(context.artifacts[ARTIFACT])
        self.model, self.task, self.family, self.spec = load_probe(directory), load_task(directory), FAMILY, {}

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        labels, probs = self.model.classify(list(model_input["text"]))
        names = self.task["classes"] if self.task else [str(k) for k in range(probs.shape[1])]
        return pd.DataFrame({"label": [names[k] for k in labels], "class_index": labels,
                             "confidence": probs.max(axis=1).astype(np.float64)})


def _flavour():
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ColSpec, Schema

    from models.pyfunc import PyfuncFlavour

    signature = ModelSignature(inputs=Schema([ColSpec("string", "text")]),
                               outputs=Schema([ColSpec("string", "label"), ColSpec("long", "class_index"),
                                               ColSpec("double", "confidence")]))
    return PyfuncFlavour(ProbePyfunc(), ARTIFACT, signature, pd.DataFrame({"text": ["an example caption"]}),
                         extra_requirements=("scikit-learn",))


def _golden_captions(golden) -> tuple[list[str], np.ndarray]:
    rows = [i for i, caption in enumerate(golden.caption or []) if caption]
    if not rows:
        raise ValueError("the golden set has no row with a caption: the probe family cannot be evaluated on it")
    return [golden.caption[i] for i in rows], np.asarray(golden.label)[rows]


def _p95_latency_ms(models: dict[str, LinearProbe], captions: list[str], items: int) -> dict[str, float]:
    """One caption as the API serves it (encode, head, softmax), models interleaved so load slows all alike."""
    timings: dict[str, list[float]] = {name: [] for name in models}
    for i in range(items + 1):  # the first call warms up
        for name in models if i % 2 == 0 else reversed(list(models)):
            started = time.perf_counter()
            models[name].classify([captions[i % len(captions)]])
            if i:
                timings[name].append((time.perf_counter() - started) * 1000)
    return {name: float(np.percentile(values, 95)) for name, values in timings.items()}


class LinearProbeFamily:
    name = FAMILY

    def metric_directions(self) -> dict[str, str]:
        return {CAPTION_METRIC: HIGHER, **BUDGET_DIRECTIONS}

    def owns(self, model: object) -> bool:
        return isinstance(model, LinearProbe)

    def train(self, request: TrainRequest) -> TrainOutcome:
        from flows.model_stages import build_golden_set, training_window
        from flows.stage_config import registry_for
        from models.artifacts import save_task
        from models.registry import log_training_run
        from models.tracking import TrainingDataset, start_training_run

        settings = request.settings
        window = training_window(settings, captions_only=True)
        labelled = np.flatnonzero(window.label >= 0)
        captions = [str(c) for c in window.inputs.caption[labelled]]
        started = time.perf_counter()
        probe = fit_probe(captions, window.label[labelled], settings.task.n_classes, REGULARISATION, settings.params.train.seed)
        seconds = time.perf_counter() - started
        golden, golden_version = build_golden_set(settings)
        golden_text, golden_label = _golden_captions(golden)
        metrics = {CAPTION_METRIC: float((probe.classify(golden_text)[0] == golden_label).mean())}
        registry = registry_for(settings)
        tags = {"flow_run": request.run_name, "family": FAMILY, "golden_version": golden_version}
        with start_training_run(registry.experiment_id(), request.run_name, tags), tempfile.TemporaryDirectory() as tmp:
            model_dir = save_probe(probe, Path(tmp) / ARTIFACT)
            save_task(model_dir, settings.task.to_dict())
            params = {"family": FAMILY, "probe.C": REGULARISATION, "data.batches": ",".join(window.batches),
                      "data.rows": len(window.inputs), "data.labelled": len(labelled)}
            logged = log_training_run(registry, model_dir, params, [], {**(request.label_metrics or {}), **metrics},
                                      tags, request.run_name, flavour=_flavour(),
                                      dataset=TrainingDataset(list(window.inputs.sample_id), window.label,
                                                              request.data_version))
        return TrainOutcome(logged.run_id, logged.model_uri, metrics, window.batches, len(window.inputs), len(labelled),
                            seconds, golden_version, window.golden_excluded)

    def score_golden(self, models: dict[str, Any], golden, settings) -> GoldenScores:
        from models.gate import ModelScores
        from models.gate_scoring import LATENCY_METRIC, SIZE_METRIC, class_slice, model_megabytes

        captions, labels = _golden_captions(golden)
        latency = _p95_latency_ms(models, captions, settings.params.gate.latency_items)
        scores = {name: ModelScores({CAPTION_METRIC: (model.classify(captions)[0] == labels).astype(np.float64)},
                                    {LATENCY_METRIC: latency[name], SIZE_METRIC: model_megabytes(model)})
                  for name, model in models.items()}
        return GoldenScores(scores, {"class": class_slice(labels, settings.task.classes)}, len(labels))

    def labelling_votes(self, model: LinearProbe, shards: Iterable[Any], task):
        from features.label import ModelVotes

        ids, predicted, confidence = [], [], []
        for inputs in shards:
            ids.extend(inputs.sample_id)
            labels, probs = model.classify([str(c) for c in inputs.caption])
            predicted.append(labels)
            confidence.append(np.where(inputs.has_caption, probs.max(axis=1) if len(probs) else 0.0, 0.0))
        return ModelVotes(ids, {"text": np.concatenate(predicted) if predicted else np.zeros(0, np.int64)},
                          {"text": np.concatenate(confidence) if confidence else np.zeros(0)})

    def serving_spec(self, model: LinearProbe, task, lake: Callable[[], Iterable[tuple[str, Any]]]):
        # The default text preparation (the frozen MiniLM embedding) is exactly the probe's input.
        from models.serving.spec import CLASSIFY, Predictions, ServingSpec

        def predict(modality: str, embeddings: np.ndarray) -> Predictions:
            return Predictions(*model.predict_embeddings(embeddings))

        return ServingSpec("linear probe on frozen caption embeddings", ("text",), (CLASSIFY,), predict,
                           n_classes=model.head.out_features)

    def observations(self, model: LinearProbe, task):
        from monitoring.observations import build_caption_monitor_data

        return lambda features, inputs, labels: build_caption_monitor_data(
            features, inputs, lambda captions: model.classify(captions)[0], labels)

    def skipped_checks(self, model) -> dict[str, dict[str, Any]]:
        return {"embedding_drift": {"status": "skipped", "reason": NO_EMBEDDINGS, "items": {}}}

    def train_cache_inputs(self, settings, data_versions: dict[str, str]) -> dict[str, Any]:
        from flows.families import source_digest

        return {"family_code": source_digest(__name__.partition(".")[0])}
