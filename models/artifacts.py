"""Model artifact I/O: a directory holding `weights.pt` (state_dict) and `config.json`.

Weights are a plain state_dict read back with `weights_only=True`, so loading an artifact
can never execute pickled code; the config beside them rebuilds the exact architecture, and
strict loading turns any mismatch between the two into an error instead of silent zeros.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from models.imagebind import ImageBind, ImageBindConfig

WEIGHTS_FILE = "weights.pt"  # torch state_dict of ImageBind
CONFIG_FILE = "config.json"  # ImageBindConfig.to_dict()


def save_model(model: ImageBind, directory: str | Path) -> Path:
    """Write `weights.pt` and `config.json` into `directory` (created if needed); return it."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), directory / WEIGHTS_FILE)
    (directory / CONFIG_FILE).write_text(json.dumps(model.config.to_dict(), indent=2, sort_keys=True))
    return directory


def load_model(directory: str | Path) -> ImageBind:
    """Rebuild the model saved by `save_model`, on the CPU and in eval mode."""
    directory = Path(directory)
    missing = [name for name in (WEIGHTS_FILE, CONFIG_FILE) if not (directory / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"model directory {directory} lacks {missing}; expected {[WEIGHTS_FILE, CONFIG_FILE]} from save_model"
        )
    config = ImageBindConfig.from_dict(json.loads((directory / CONFIG_FILE).read_text()))
    model = ImageBind(config)
    state = torch.load(directory / WEIGHTS_FILE, map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    return model.eval()
