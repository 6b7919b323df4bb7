"""An untrained ImageBind of the task's input size, logged as training logs one: for tests of the registry,
the gate and the model card, which need registered versions but no training."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path


def log_untrained_imagebind(settings, registry, seed: int, run_name: str):
    """models.registry.LoggedModel of a seeded, untrained ImageBind with its input_spec.json, under `run_name`."""
    import torch

    from flows.stage_config import input_spec
    from models.artifacts import save_model
    from models.imagebind import ImageBind, ImageBindConfig
    from models.registry import log_training_run

    spec = input_spec(settings)
    torch.manual_seed(seed)
    model = ImageBind(ImageBindConfig(image_size=spec.image_size, audio_n_mels=spec.n_mels, audio_frames=spec.audio_frames))
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = save_model(model, Path(tmp) / "imagebind")
        (model_dir / "input_spec.json").write_text(json.dumps({"image_size": spec.image_size, "n_mels": spec.n_mels,
                                                               "audio_frames": spec.audio_frames, "sample_rate": 16000}))
        return log_training_run(registry, model_dir, {"seed": seed}, [], {}, {}, run_name)
