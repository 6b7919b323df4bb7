"""Train ImageBind from an .npz of training arrays, in one process or many (torchrun).

    python -m models.train_ddp --data train.npz --out run/
    torchrun --standalone --nproc-per-node 2 -m models.train_ddp --data train.npz --out run/

The same command serves both: under torchrun it joins the process group (gloo on the CPU,
NCCL on CUDA, one GPU per local rank) and every process trains on its share of each global
batch. Rank 0 writes `run/checkpoints/last.pt` each epoch, then `run/model/` (see
`models.artifacts`) and `run/history.json`. Running the command again resumes from the
checkpoint. The .npz holds `image`, `audio`, `text_emb` and `label` (see `TrainingData`);
`--model-config` and `--train-config` are JSON files of `ImageBindConfig` / `TrainConfig`
fields (defaults: the demo's).
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from models.artifacts import save_model
from models.imagebind import ImageBindConfig
from models.train import TrainConfig, TrainingData, train_imagebind

ARRAYS = ("image", "audio", "text_emb", "label")  # keys the .npz must hold, as in TrainingData


def load_training_data(path: Path) -> TrainingData:
    """The arrays of `TrainingData` from an .npz, naming any that are missing."""
    with np.load(path) as npz:
        missing = [k for k in ARRAYS if k not in npz.files]
        if missing:
            raise ValueError(f"{path} lacks arrays {missing}; expected {list(ARRAYS)}, found {npz.files}")
        return TrainingData(**{k: npz[k] for k in ARRAYS})


def save_training_data(data: TrainingData, path: Path) -> Path:
    """Inverse of `load_training_data`."""
    np.savez(path, **{k: getattr(data, k) for k in ARRAYS})
    return path


def _read_json(path: Path | None) -> dict:
    return {} if path is None else json.loads(path.read_text())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help=".npz with image, audio, text_emb, label")
    parser.add_argument("--out", type=Path, required=True, help="run folder: checkpoints/, model/, history.json")
    parser.add_argument("--model-config", type=Path, help="JSON of ImageBindConfig fields")
    parser.add_argument("--train-config", type=Path, help="JSON of TrainConfig fields")
    args = parser.parse_args(argv)

    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1  # set by torchrun
    if distributed:
        local_rank = int(os.environ["LOCAL_RANK"])
        if torch.cuda.is_available():
            torch.cuda.set_device(local_rank)
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    try:
        model_config = ImageBindConfig.from_dict({**ImageBindConfig().to_dict(), **_read_json(args.model_config)})
        train_config = replace(TrainConfig(**_read_json(args.train_config)), checkpoint_dir=str(args.out / "checkpoints"))
        result = train_imagebind(load_training_data(args.data), model_config, train_config)
        if not distributed or dist.get_rank() == 0:
            save_model(result.model, args.out / "model")
            (args.out / "history.json").write_text(json.dumps(result.history, indent=1))
    finally:
        if distributed:
            dist.destroy_process_group()


if __name__ == "__main__":
    main()
