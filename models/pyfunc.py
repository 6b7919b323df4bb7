"""The logged model: an MLflow pyfunc around each family, so any MLflow client can load and call it.

ImageBind: `predict` takes a DataFrame with any of the columns `text`, `image_path`, `audio_path`
(one row per item) and returns one embedding column per modality present. The `lora` family's
caption classifier takes `text` and returns the class name, its index, confidence and the scores.
Both wrappers keep the loaded torch module as `.model` (what `models.registry.load_version` returns),
the task the model was trained for as `.task` (its `task.json`: classes and prompts; None for a
model logged before models carried it) and the name of its family as `.family` (the model folder's
config); a plug-in family's wrapper keeps the same three, and `load_registered` finds the family by name.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.types.schema import Array, ColSpec, Schema

DEFAULT_SILENCE_DB = 40.0  # models logged before input_spec.json recorded the clean stage's trim level


class ImageBindPyfunc(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        from models.artifacts import load_model, load_task, saved_family

        directory = Path(context.artifacts[IMAGEBIND_ARTIFACT])
        self.model = load_model(directory)
        self.family = saved_family(directory)
        self.spec = json.loads((directory / "input_spec.json").read_text())
        self.task = load_task(directory)

    def _image(self, path: str) -> np.ndarray:
        from PIL import Image

        from models.transforms import image_mode, image_to_input

        with Image.open(path) as handle:  # grayscale or RGB, as the model was trained
            return image_to_input(np.asarray(handle.convert(image_mode(self.spec.get("image_channels", 1)))),
                                  self.spec["image_size"])

    def _audio(self, path: str) -> np.ndarray:
        import soundfile as sf

        from models.transforms import prepare_waveform, waveform_to_log_mel

        wave, rate = sf.read(path, dtype="float32", always_2d=True)
        target = self.spec["sample_rate"]
        try:
            mono = prepare_waveform(wave, rate, target, self.spec.get("silence_db", DEFAULT_SILENCE_DB))
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from err
        return waveform_to_log_mel(mono, target, self.spec["n_mels"], self.spec["audio_frames"])

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        import torch

        from models.text import encode_texts

        loaders = {
            "text": ("text", lambda col: torch.from_numpy(encode_texts(list(col)))),
            "image_path": ("vision", lambda col: torch.from_numpy(np.stack([self._image(p) for p in col]))),
            "audio_path": ("audio", lambda col: torch.from_numpy(np.stack([self._audio(p) for p in col]))),
        }
        unknown = set(model_input.columns) - set(loaders)
        if unknown:
            raise ValueError(f"unknown input columns {sorted(unknown)}; accepted: {sorted(loaders)}")
        inputs = {loaders[c][0]: loaders[c][1](model_input[c]) for c in model_input.columns}
        self.model.eval()
        with torch.no_grad():
            embeddings = self.model(inputs)
        return pd.DataFrame({f"{m}_embedding": list(e.numpy()) for m, e in embeddings.items()})


class CaptionClassifierPyfunc(mlflow.pyfunc.PythonModel):
    """The `lora` family: a `text` column in; `label` (class name), `class_index`, `confidence` and the
    per-class `scores` out."""

    def load_context(self, context) -> None:
        from models.artifacts import load_caption_classifier, load_task, saved_family

        directory = Path(context.artifacts[CLASSIFIER_ARTIFACT])
        self.model = load_caption_classifier(directory)
        self.family = saved_family(directory)
        self.spec = {"family": self.family, "modalities": ["text"]}
        self.task = load_task(directory)

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        from models.lora_family import classify_captions

        if set(model_input.columns) != {"text"}:
            raise ValueError(f"input columns {sorted(model_input.columns)}: the lora family classifies text only; "
                             "send one column `text`")
        predicted, probs = classify_captions(self.model, [str(t) for t in model_input["text"]])
        names = self.task["classes"] if self.task else [str(k) for k in range(probs.shape[1])]
        return pd.DataFrame({"label": [str(names[k]) for k in predicted], "class_index": predicted,
                             "confidence": probs.max(axis=1).astype(np.float64), "scores": list(probs.astype(np.float64))})


IMAGEBIND_ARTIFACT, CLASSIFIER_ARTIFACT = "imagebind", "classifier"  # keys of the model folder in `artifacts`


@dataclass(frozen=True)
class PyfuncFlavour:
    """How one family is logged as an MLflow pyfunc: the wrapper, its artifact key, signature and example."""

    python_model: mlflow.pyfunc.PythonModel
    artifact_key: str
    signature: ModelSignature
    input_example: pd.DataFrame
    extra_requirements: tuple[str, ...] = ()  # pip requirements beyond models.registry.PIP_REQUIREMENTS


def imagebind_flavour() -> PyfuncFlavour:
    from models.tracking import PYFUNC_INPUT_EXAMPLE, pyfunc_signature

    return PyfuncFlavour(ImageBindPyfunc(), IMAGEBIND_ARTIFACT, pyfunc_signature(), PYFUNC_INPUT_EXAMPLE)


def caption_classifier_flavour() -> PyfuncFlavour:
    signature = ModelSignature(inputs=Schema([ColSpec("string", "text")]),
                               outputs=Schema([ColSpec("string", "label"), ColSpec("long", "class_index"),
                                               ColSpec("double", "confidence"), ColSpec(Array("double"), "scores")]))
    return PyfuncFlavour(CaptionClassifierPyfunc(), CLASSIFIER_ARTIFACT, signature,
                         pd.DataFrame({"text": ["an example caption"]}), extra_requirements=("peft",))


@dataclass(frozen=True)
class RegisteredModel:
    """A registered version loaded through MLflow's own loader, with the family it belongs to."""

    model: Any  # the family's model (the pyfunc wrapper's `.model`)
    family: Any  # models.family.ModelFamily
    task: dict | None  # its task.json (None: logged before models carried their task)
    spec: dict[str, Any]  # its input spec (input_spec.json), empty when the family keeps none


def load_registered(registry, version: str, known: Iterable[Any] = ()) -> RegisteredModel:
    """Load `version` of `registry`'s model and find its family by the name its wrapper carries (`known`
    first: the configured train.family, which may be given by import path); a wrapper naming no family:
    the family that owns the model."""
    from models.family import family_named, family_of

    registry.client()
    python_model = mlflow.pyfunc.load_model(f"models:/{registry.model_name}/{version}").unwrap_python_model()
    model = python_model.model
    name = getattr(python_model, "family", None)
    family = family_named(name, known) if name else family_of(model, known)
    return RegisteredModel(model, family, getattr(python_model, "task", None), dict(getattr(python_model, "spec", None) or {}))
