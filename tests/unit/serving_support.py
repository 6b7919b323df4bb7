"""Small models, payloads and a registry for the serving tests and `benchmarks/serving.py`.

Untrained models are enough here: serving is about plumbing (payloads, versions, logs), and a
search for an indexed item finds that item whatever the weights, since embeddings are deterministic.
"""

from __future__ import annotations

import io
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from PIL import Image
from sklearn.datasets import load_digits

from models.inputs import ModelInputs, save_model_inputs
from models.transforms import image_to_input, prepare_waveform, waveform_to_log_mel

SPEC = {"image_size": 16, "image_channels": 1, "n_mels": 40, "audio_frames": 100, "sample_rate": 16000,
        "silence_db": 40.0, "depth_size": 16, "thermal_size": 16, "imu_length": 160}
ITEMS = 24  # indexed demo items


def digit_png(index: int) -> bytes:
    """A scikit-learn digit as an 8x8 grayscale PNG (ink bright on dark, like the demo's images)."""
    pixels = (load_digits().images[index] * (255 / 16)).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def tone_wav(freq: float, seconds: float = 0.5, rate: int = 22050) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    wave = (0.3 * np.sin(2 * np.pi * freq * t) * np.hanning(len(t))).astype(np.float32)
    buffer = io.BytesIO()
    sf.write(buffer, wave, rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def demo_inputs(n: int = ITEMS) -> ModelInputs:
    """Model inputs of `n` items prepared as serving prepares payloads: digit i, a tone, a caption."""
    images, audio = [], []
    for i in range(n):
        with Image.open(io.BytesIO(digit_png(i))) as handle:
            images.append(image_to_input(np.asarray(handle.convert("L")), SPEC["image_size"]))
        wave, rate = sf.read(io.BytesIO(tone_wav(200 + 40 * i)), dtype="float32", always_2d=True)
        mono = prepare_waveform(wave, rate, SPEC["sample_rate"], SPEC["silence_db"])
        audio.append(waveform_to_log_mel(mono, SPEC["sample_rate"], SPEC["n_mels"], SPEC["audio_frames"]))
    digits = load_digits().target[:n]
    captions = np.array([f"the number {d}" if i % 3 else "" for i, d in enumerate(digits)], dtype=str)
    return ModelInputs(sample_id=np.array([f"s{i:03d}" for i in range(n)]), image=np.stack(images),
                       audio=np.stack(audio), caption=captions, depth=np.zeros((n, 1, 16, 16), np.float32),
                       thermal=np.zeros((n, 1, 16, 16), np.float32), imu=np.zeros((n, 6, 160), np.float32),
                       has_image=np.ones(n, bool), has_audio=np.arange(n) % 4 != 0, has_caption=captions != "",
                       has_depth=np.zeros(n, bool), has_thermal=np.zeros(n, bool), has_imu=np.zeros(n, bool))


def random_model(seed: int):
    from models.imagebind import ImageBind, ImageBindConfig

    torch.manual_seed(seed)
    return ImageBind(ImageBindConfig(image_size=SPEC["image_size"], audio_n_mels=SPEC["n_mels"],
                                     audio_frames=SPEC["audio_frames"])).eval()


def served_model(seed: int, version: str, inputs: ModelInputs | None = None):
    """A ServedModel without a registry: a random model, the digits example's task and prompts, and an
    index over `inputs`."""
    from models.serving.scoring import ServedModel, imagebind_serving_spec
    from tests.unit.task_support import example_task

    model, task = random_model(seed), example_task()
    parts = [("batch-1", inputs)] if inputs is not None else []
    return ServedModel("flywheel-imagebind", version, model, dict(SPEC), task,
                       imagebind_serving_spec(model, task, lambda: parts), time.time(), family="imagebind")


def build_registry(home: Path, seeds: tuple[int, ...] = (0, 1), batch: str = "batch-1"):
    """FLYWHEEL_HOME with one registered version per seed (@champion on the first) and one batch of
    model inputs; returns the Settings. Takes a few seconds per version (log_model)."""
    from flows.settings import load_settings
    from flows.stage_config import registry_for
    from models.artifacts import save_model
    from models.registry import CHAMPION, log_training_run, register_candidate
    from tests.conftest import PROJECT

    settings = load_settings(home, PROJECT / "params.yaml")
    save_model_inputs(settings.paths.batch_inputs(batch) / "part-00000.npz", demo_inputs())
    registry = registry_for(settings)
    for seed in seeds:
        with tempfile.TemporaryDirectory() as tmp:
            model_dir = save_model(random_model(seed), Path(tmp) / "imagebind")
            (model_dir / "input_spec.json").write_text(json.dumps(SPEC))
            logged = log_training_run(registry, model_dir, {"seed": seed}, [], {}, {}, f"serving-test-{seed}")
        register_candidate(registry, logged, {"seed": str(seed)})
    registry.client().set_registered_model_alias(registry.model_name, CHAMPION, "1")
    return settings


