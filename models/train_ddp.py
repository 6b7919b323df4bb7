"""Train ImageBind from an .npz of training arrays, in one process or many (torchrun).

    python -m models.train_ddp --data train.npz --train-config train.json --out run/
    torchrun --standalone --nproc-per-node 2 -m models.train_ddp --data train.npz --train-config train.json --out run/

The same command serves both: under torchrun it joins the process group (gloo on the CPU,
NCCL on CUDA, one GPU per local rank) and every process trains on its share of each global
batch. Rank 0 writes `run/checkpoints/last.pt` each epoch, then `run/model/` (see
`models.artifacts`) and `run/history.json`. Running the command again resumes from the
checkpoint. The .npz holds `image`, `audio`, `text_emb` and `label` (see `TrainingData`);
`--model-config` is a JSON file of `ImageBindConfig` fields (default: the demo's) or `huge`, Meta's
`imagebind_huge`; `--train-config` a JSON file of `TrainConfig` fields, at least those of params.yaml's
`train:` (`flywheel params --defaults` prints them: seed, batch_size, epochs_stage1, epochs_stage2, lr,
weight_decay, label_aware, grad_clip).

Fine-tuning official weights with LoRA on a GPU, tracked in MLflow (MLFLOW_TRACKING_URI):

    torchrun --standalone --nproc-per-node 8 -m models.train_ddp --data pairs.npz --train-config train.json --out run/ \
        --model-config huge --init-weights imagebind_huge.pth --lora '{"r": 8, "alpha": 16, "dropout": 0.0}' \
        --track imagebind-lora

With `--init-weights` the .npz holds the official inputs: `image` (N, 3, 224, 224), `audio`
(N, 204, 128) log-mel, `text_emb` (N, 77) int token ids.
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import replace
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.distributed as dist

from features.env import apply_process_environment
from models.artifacts import save_model
from models.imagebind import ImageBindConfig
from models.train import TrainConfig, TrainingData, train_imagebind

if TYPE_CHECKING:
    from models.lora import LoraSettings

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


def train_config_from(path: Path) -> TrainConfig:
    """TrainConfig from a JSON file; a missing or unknown field stops here, naming it."""
    try:
        return TrainConfig(**_read_json(path))
    except TypeError as err:
        raise SystemExit(f"--train-config {path}: {err}; `flywheel params --defaults` prints the train: values") from err


def model_config_from(arg: str | None) -> ImageBindConfig:
    """`huge`, a JSON file of ImageBindConfig fields (over the demo defaults), or None: the demo's."""
    if arg == "huge":
        return ImageBindConfig.huge()
    return ImageBindConfig.from_dict({**ImageBindConfig().to_dict(), **_read_json(None if arg is None else Path(arg))})


def lora_from(arg: str | None) -> LoraSettings | None:
    """LoraSettings from inline JSON or a JSON file; None without the option."""
    if arg is None:
        return None
    from models.lora import LoraSettings

    text = Path(arg).read_text() if not arg.lstrip().startswith("{") else arg
    fields = json.loads(text)
    if isinstance(fields.get("target_modules"), list):
        fields["target_modules"] = tuple(fields["target_modules"])
    try:
        return LoraSettings(**fields)
    except TypeError as err:  # an unknown field name
        raise SystemExit(f"--lora: {err}; fields are r, alpha, dropout (required), target_modules, train_heads") from err


def load_weights(path: Path | None) -> dict[str, torch.Tensor] | None:
    if path is None:
        return None
    if not path.is_file():
        raise SystemExit(f"--init-weights {path}: no such file (for the official weights: imagebind_huge.pth)")
    return torch.load(path, map_location="cpu", weights_only=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help=".npz with image, audio, text_emb, label")
    parser.add_argument("--out", type=Path, required=True, help="run folder: checkpoints/, model/, history.json")
    parser.add_argument("--model-config", help="JSON file of ImageBindConfig fields, or 'huge' (Meta's imagebind_huge)")
    parser.add_argument("--train-config", type=Path, required=True,
                        help="JSON of TrainConfig fields (at least params.yaml's train: ones)")
    parser.add_argument("--init-weights", type=Path, help="state_dict to start from (e.g. imagebind_huge.pth), loaded strictly")
    parser.add_argument("--lora", help='LoRA on the trained towers\' trunks: inline JSON or a file, e.g. \'{"r": 8}\'')
    parser.add_argument("--track", metavar="EXPERIMENT", help="log params, step and epoch metrics, system metrics "
                        "and the model to this MLflow experiment (MLFLOW_TRACKING_URI)")
    args = parser.parse_args(argv)
    apply_process_environment()  # telemetry off and hubs offline, as in every process the project starts
    lora = lora_from(args.lora)
    init_weights = load_weights(args.init_weights)

    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1  # set by torchrun
    if distributed:
        local_rank = int(os.environ["LOCAL_RANK"])
        if torch.cuda.is_available():
            torch.cuda.set_device(local_rank)
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    try:
        model_config = model_config_from(args.model_config)
        train_config = replace(train_config_from(args.train_config), checkpoint_dir=str(args.out / "checkpoints"))
        data = load_training_data(args.data)
        main_process = not distributed or dist.get_rank() == 0
        with ExitStack() as stack:
            callbacks = {}
            if args.track and main_process:
                callbacks, run_id = _tracked(stack, args, model_config, train_config, lora, len(data))
            result = train_imagebind(data, model_config, train_config, init_weights=init_weights, lora=lora, **callbacks)
            if main_process:
                save_model(result.model, args.out / "model")
                (args.out / "history.json").write_text(json.dumps(result.history, indent=1))
                if args.track:
                    import mlflow

                    mlflow.log_artifacts(str(args.out / "model"), artifact_path="model", run_id=run_id)
                    mlflow.log_dict(result.history, "history.json", run_id=run_id)
    finally:
        if distributed:
            dist.destroy_process_group()


def _tracked(stack: ExitStack, args: argparse.Namespace, model_config: ImageBindConfig, train_config: TrainConfig,
             lora: LoraSettings | None, rows: int) -> tuple[dict, str]:
    """Open an MLflow run (system metrics on) for the block; the callbacks that log each step and epoch."""
    import mlflow

    from models.tracking import EpochLogger, config_params, start_training_run

    from models.registry import model_development_experiment

    experiment_id = model_development_experiment(mlflow.MlflowClient(), args.track)
    run = stack.enter_context(start_training_run(experiment_id, args.out.name, {"entry": "models.train_ddp"}))
    params = {**config_params(model_config, train_config, lora),
              "init_weights": str(args.init_weights) if args.init_weights else "none", "data": str(args.data),
              "data.rows": rows, "world_size": int(os.environ.get("WORLD_SIZE", "1"))}
    mlflow.log_params({k: str(v)[:6000] for k, v in params.items()}, run_id=run.info.run_id)
    logger = EpochLogger(run.info.run_id, train_config, rows)
    return {"on_epoch": logger, "on_step_losses": logger.record_steps}, run.info.run_id


if __name__ == "__main__":
    main()
