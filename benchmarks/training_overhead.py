"""Training-loop overhead: `train_imagebind` (history, callbacks, a checkpoint each epoch) against a
bare torch loop over the same model, batches and optimiser steps, in the same process.

Modes, interleaved over repeats so machine noise hits each alike:

  bare         a plain loop: forward, InfoNCE, backward, clip, AdamW step; nothing recorded
  loop         train_imagebind, no checkpoints, an on_epoch tracker that keeps the metrics
  checkpoints  the same plus a checkpoint each epoch (atomic write with fsync)

The bare loop reuses the loop's pure helpers (batch order, jitter, schedule, optimiser groups),
and the script checks that it ends with the same weights as `train_imagebind`, so both did
the same work. Data are random arrays shaped like the demo's (the cost does not depend on
the values). Overhead ratio = median(mode) / median(bare); also the median of per-repeat ratios
and the ratio of minima (the least disturbed runs, on a machine shared with other work).
Usage: python benchmarks/training_overhead.py [--rows 1437] [--epochs 4] [--repeats 9] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT))

from models.checkpoints import capture_rng_state, save_checkpoint  # noqa: E402
from models.imagebind import AUDIO, TEXT, VISION, ImageBind, ImageBindConfig  # noqa: E402
from models.losses import pair_loss  # noqa: E402
from flows.settings import TrainParams  # noqa: E402
from flows.stage_config import train_config  # noqa: E402
from models.train import (  # noqa: E402
    TrainConfig,
    TrainingData,
    build_optimizer,
    embed_frozen,
    epoch_generators,
    freeze,
    iterate_batches,
    lr_at,
    random_shift,
    torch_threads,
    train_imagebind,
)

MODES = ("bare", "loop", "checkpoints")


def make_data(rows: int, config: ImageBindConfig, seed: int = 0) -> TrainingData:
    """Random arrays of the demo's shapes: 8×8-ish images, log-mel clips, MiniLM-sized captions."""
    rng = np.random.default_rng(seed)
    label = rng.integers(0, 10, rows)
    return TrainingData(
        image=rng.random((rows, 1, config.image_size, config.image_size), dtype=np.float32),
        audio=(rng.standard_normal((rows, config.audio_frames, config.audio_n_mels)) * 4 - 10).astype(np.float32),
        text_emb=rng.standard_normal((rows, config.text_input_dim)).astype(np.float32),
        label=np.where(rng.random(rows) < 0.2, label, -1).astype(np.int64),
    )


def bare_loop(data: TrainingData, model_config: ImageBindConfig, config: TrainConfig) -> ImageBind:
    """The two stages as one would write them by hand: no history, callbacks or checkpoints."""
    torch.manual_seed(config.seed)
    model = ImageBind(model_config).train()
    tensors = {VISION: torch.from_numpy(data.image), AUDIO: torch.from_numpy(data.audio),
               TEXT: torch.from_numpy(data.text_emb)}
    labels = torch.from_numpy(data.label)
    stages = (((VISION, TEXT), (VISION, TEXT), config.epochs_stage1), ((AUDIO, VISION), (AUDIO,), config.epochs_stage2))
    with torch_threads(config.num_threads):
        for index, (pair, trained, epochs) in enumerate(stages):
            if index == 1:
                freeze(model.tower_modules(VISION))
            params = [p for m in trained for p in model.tower_parameters(m)]
            cached = {m: embed_frozen(model, m, tensors[m], torch.device("cpu")) for m in pair if m not in trained}
            n = len(data)
            total = max(1, (n // config.batch_size + (1 if n % config.batch_size >= 2 else 0)) * epochs)
            optimizer = build_optimizer(params, config)
            step = 0
            for epoch in range(epochs):
                order, jitter = epoch_generators(config.seed, index, epoch)
                for batch in iterate_batches(n, config.batch_size, order):
                    for group in optimizer.param_groups:
                        group["lr"] = config.lr * lr_at(step, total, 1.0, config.warmup_fraction, config.min_lr_ratio)
                    idx = torch.from_numpy(batch)
                    inputs = {m: tensors[m][idx] for m in pair if m not in cached}
                    if VISION in inputs:
                        inputs[VISION] = random_shift(inputs[VISION], config.image_shift, jitter)
                    out = model(inputs)
                    out.update({m: cached[m][idx] for m in cached})
                    loss = pair_loss(out[pair[0]], out[pair[1]], labels[idx])
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
                    optimizer.step()
                    step += 1
    return model.eval()


def run_once(mode: str, data: TrainingData, model_config: ImageBindConfig,
             config: TrainConfig) -> tuple[float, float, ImageBind]:
    """(wall seconds, this process's CPU seconds, final model) of one training run."""
    started, cpu_started = time.perf_counter(), time.process_time()
    if mode == "bare":
        model = bare_loop(data, model_config, config)
    else:
        tracked: list[dict[str, float]] = []
        with tempfile.TemporaryDirectory() as tmp:
            run_config = TrainConfig(**{**config.__dict__, "checkpoint_dir": tmp if mode == "checkpoints" else None})
            model = train_imagebind(data, model_config, run_config, on_epoch=lambda s, e, m: tracked.append(m)).model
    return time.perf_counter() - started, time.process_time() - cpu_started, model


def checkpoint_write_seconds(model_config: ImageBindConfig, config: TrainConfig, repeats: int = 10) -> float:
    """Median wall time of one `save_checkpoint` of the demo model with its AdamW state (fsync included)."""
    model = ImageBind(model_config)
    optimizer = build_optimizer(list(model.parameters()), config)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()  # creates the moment buffers a real checkpoint carries
    times = []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(repeats):
            started = time.perf_counter()
            save_checkpoint(tmp, {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                  "rng": capture_rng_state()})
            times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1437, help="training rows (the quality test has 1,437)")
    parser.add_argument("--epochs", type=int, default=4, help="epochs per stage")
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--out", type=Path, default=PROJECT / "benchmarks" / "results" / "training_overhead.json")
    args = parser.parse_args()

    model_config = ImageBindConfig()
    config = train_config(TrainParams(epochs_stage1=args.epochs, epochs_stage2=args.epochs), device="cpu")
    data = make_data(args.rows, model_config)
    *_, reference = run_once("loop", data, model_config, config)  # warm-up, and the weights to match
    *_, bare = run_once("bare", data, model_config, config)
    same = all(torch.equal(a, b) for a, b in zip(reference.state_dict().values(), bare.state_dict().values()))
    if not same:
        raise RuntimeError("the bare loop and train_imagebind ended with different weights: not the same work")

    seconds: dict[str, list[float]] = {m: [] for m in MODES}
    cpu: dict[str, list[float]] = {m: [] for m in MODES}
    for repeat in range(args.repeats):
        for mode in MODES[repeat % len(MODES):] + MODES[: repeat % len(MODES)]:  # rotate the order
            wall, cpu_s, _ = run_once(mode, data, model_config, config)
            seconds[mode].append(wall)
            cpu[mode].append(cpu_s)
            print(f"repeat {repeat} {mode:12s} {wall:.2f} s wall {cpu_s:.2f} s cpu", flush=True)

    median = {m: statistics.median(v) for m, v in seconds.items()}
    median_cpu = {m: statistics.median(v) for m, v in cpu.items()}
    fastest = {m: min(v) for m, v in seconds.items()}
    write_s = checkpoint_write_seconds(model_config, config)
    result = {
        "rows": args.rows, "epochs_per_stage": args.epochs, "repeats": args.repeats,
        "batch_size": config.batch_size, "num_threads": config.num_threads,
        "torch": torch.__version__, "cpus": os.cpu_count(), "machine": platform.machine(),
        "same_final_weights": same,
        "seconds": seconds, "median_s": median,
        "overhead_ratio": {m: median[m] / median["bare"] for m in MODES[1:]},
        "median_paired_ratio": {m: statistics.median(t / b for t, b in zip(seconds[m], seconds["bare"]))
                                for m in MODES[1:]},
        "min_s": fastest,
        "min_ratio": {m: fastest[m] / fastest["bare"] for m in MODES[1:]},
        # CPU time of this process: far less disturbed by other processes, but blind to fsync waits.
        "cpu_seconds": cpu, "median_cpu_s": median_cpu,
        "cpu_overhead_ratio": {m: median_cpu[m] / median_cpu["bare"] for m in MODES[1:]},
        # The checkpoints' own cost, timed alone: one write per epoch against the bare run.
        "checkpoint_write_s": write_s,
        "checkpoint_share_of_bare": write_s * 2 * args.epochs / median["bare"],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("median_s", "overhead_ratio", "median_paired_ratio", "min_ratio",
                                                  "cpu_overhead_ratio", "checkpoint_write_s", "checkpoint_share_of_bare")}, indent=2))


if __name__ == "__main__":
    main()
