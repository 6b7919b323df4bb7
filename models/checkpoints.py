"""Training checkpoints: one file per run folder, replaced atomically after every epoch.

A checkpoint holds everything the loop needs to continue as if never stopped: weights,
optimiser and scheduler state, the global RNG states of torch, numpy and python, the
position (stage, epoch) and the history so far. It is written to a temporary file in the
same folder and renamed over the previous one, so a process killed while writing leaves
the last complete checkpoint in place. Reading uses `weights_only=True`: a checkpoint is
data (tensors, numbers, strings, lists, dicts), never pickled code.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

CHECKPOINT_FILE = "last.pt"  # the newest complete checkpoint in a run's checkpoint folder


def capture_rng_state() -> dict[str, Any]:
    """The process-wide RNG states (torch CPU and CUDA, numpy's legacy global, python's `random`)."""
    legacy = cast(tuple[str, np.ndarray, int, int, float], np.random.get_state(legacy=True))
    kind, keys, pos, has_gauss, cached = legacy
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of `capture_rng_state`; CUDA states are restored only where CUDA is in use."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    keys = n["keys"].numpy().astype(np.uint32)
    np.random.set_state((n["kind"], keys, n["pos"], n["has_gauss"], n["cached_gaussian"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(directory: str | Path, state: dict[str, Any]) -> Path:
    """Write `state` to `directory/last.pt` atomically (temp file, fsync, rename); return the path."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / CHECKPOINT_FILE
    fd, tmp = tempfile.mkstemp(prefix=f".{CHECKPOINT_FILE}.", dir=directory)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(state, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)  # atomic on POSIX and Windows: readers see old or new, never half
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def load_checkpoint(directory: str | Path) -> dict[str, Any] | None:
    """The newest checkpoint in `directory`, or None when there is none yet."""
    path = Path(directory) / CHECKPOINT_FILE
    if not path.is_file():
        return None
    return torch.load(path, map_location="cpu", weights_only=True)


def state_digest(state: dict[str, torch.Tensor] | None) -> str | None:
    """A digest of a state_dict (a fine-tune's starting weights), part of its run's fingerprint; None: none given."""
    if state is None:
        return None
    digest = hashlib.sha256()
    for key in sorted(state):
        digest.update(key.encode())
        digest.update(state[key].detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def run_fingerprint(arrays: Iterable[np.ndarray], **configs: dict[str, Any]) -> dict[str, Any]:
    """What a checkpoint must come from to be resumed: the configs and a digest of the data arrays."""
    digest = hashlib.sha256()
    for array in arrays:
        digest.update(np.ascontiguousarray(array).tobytes())
    # Through JSON so tuples and lists compare equal after a round trip through the checkpoint.
    return json.loads(json.dumps({"configs": configs, "data_sha256": digest.hexdigest()}))


def check_resumable(saved: dict[str, Any], current: dict[str, Any], directory: str) -> None:
    """Refuse a checkpoint from another configuration or dataset, naming what differs."""
    old, new = saved["configs"], current["configs"]
    differ = [f"{part}.{k}: {old.get(part, {}).get(k)!r} → {new[part].get(k)!r}"
              for part in new for k in sorted(set(old.get(part, {})) | set(new[part]))
              if old.get(part, {}).get(k) != new[part].get(k)]
    if saved["data_sha256"] != current["data_sha256"]:
        differ.append("training data (another dataset or row order)")
    if differ:
        raise ValueError(f"checkpoint in {directory} is from another run ({'; '.join(differ)}); "
                         "use a new checkpoint folder or the original settings")
