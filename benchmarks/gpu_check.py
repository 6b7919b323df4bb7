"""GPU check (issue 4): LoRA fine-tuning of ImageBind-huge in bf16, and the demo training, on one GPU.

The GPU machine has no espeak-ng and no MiniLM package, so the check runs in two steps:

  prepare   (here, on the CPU machine) the demo data as `benchmarks/emergent_alignment.py` builds it
            (training rows, held-out voices, held-out images) plus the prompt embeddings, saved as
            arrays in one .npz (MiniLM caption embeddings included, as training uses them);
  run       (on the GPU) two measurements, written to one JSON:
    huge    `ImageBindConfig.huge()` (Meta's 1.2 B-parameter architecture, random weights: nothing is
            downloaded), official input shapes, bf16 autocast, AdamW. Per mode, same batches and
            steps: `lora` (peft adapters on the vision, text and audio trunks, heads trained) and
            `full` (every parameter of those towers trained): trainable parameters, samples/s and
            peak GPU memory; then the LoRA model's forward latency with adapters against merged.
            The loss is vision↔text plus audio↔vision InfoNCE, the paper's two pairings.
    demo    `train_imagebind` with the shipped recipe (both stages) on CUDA, and the same call on
            the GPU machine's CPU (one thread, as the CPU default) for a ratio in the same run;
            zero-shot accuracies on held-out voices and images for both.

Usage:
  python benchmarks/gpu_check.py prepare --out .gpu/demo_arrays.npz
  python benchmarks/gpu_check.py run --arrays .gpu/demo_arrays.npz --out benchmarks/results/gpu_check.json
  python benchmarks/gpu_check.py run --smoke ...   # tiny sizes, any device: checks the script itself
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT))

from features.env import apply_process_environment  # noqa: E402

apply_process_environment()

import torch  # noqa: E402

from models.evaluate import EvalData, evaluate_model  # noqa: E402
from models.imagebind import AUDIO, TEXT, VISION, ImageBind, ImageBindConfig  # noqa: E402
from models.lora import LoraSettings, add_imagebind_lora, count_parameters, merge_lora  # noqa: E402
from models.losses import pair_loss  # noqa: E402
from flows.settings import TrainParams  # noqa: E402
from flows.stage_config import train_config as shipped_recipe  # noqa: E402
from models.train import TrainConfig, TrainingData, train_imagebind  # noqa: E402

TOWERS = (VISION, TEXT, AUDIO)  # the towers fine-tuned in the huge check (ImageBind-LoRA's choice)


# ---- prepare (CPU machine) -----------------------------------------------------------------------


def prepare(out: Path, train_samples: int, golden_samples: int, seed: int) -> None:
    """`make run`'s two training batches (train_samples rows in all) and an evaluation batch drawn like the golden
    one, as benchmarks/emergent_alignment.py builds them: `voices` its rows of speech training never hears
    (held-out voices, accents, engine), `golden` all of its rows (held-out images)."""
    import tempfile

    from benchmarks.emergent_alignment import EXAMPLE_PARAMS, build_data, example_prompt_embeddings
    from flows.settings import load_params

    params = load_params(EXAMPLE_PARAMS)
    params = params.model_copy(update={"demo": params.demo.model_copy(update={"samples": train_samples // 2})})
    with tempfile.TemporaryDirectory() as tmp:
        train, evaluation, seconds = build_data(Path(tmp), params, golden_samples, seed)

    def rows(keep: np.ndarray) -> EvalData:
        return EvalData(image=evaluation["image"][keep], audio=evaluation["audio"][keep], label=evaluation["digit"][keep],
                        groups={"voice": list(evaluation["voice"][keep])})

    voices, golden = rows(evaluation["voice_group"] != "train"), rows(np.ones(len(evaluation["digit"]), bool))
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        out, train_image=train.image, train_audio=train.audio, train_text_emb=train.text_emb, train_label=train.label,
        voices_image=voices.image, voices_audio=voices.audio, voices_label=voices.label, voices_voice=np.array(voices.groups["voice"]),
        golden_image=golden.image, golden_audio=golden.audio, golden_label=golden.label, golden_voice=np.array(golden.groups["voice"]),
        prompt_emb=example_prompt_embeddings(), seed=np.array(seed),
    )
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB): {len(train)} training rows, {len(voices.label)} held-out "
          f"voice rows, {len(golden.label)} held-out image rows; data {sum(seconds.values()):.1f} s")


# ---- huge: LoRA against full fine-tuning --------------------------------------------------------


def huge_inputs(config: ImageBindConfig, batch: int, device: torch.device, seed: int) -> dict[str, torch.Tensor]:
    """Random inputs in the official shapes: vision (B,3,S,S), text ids (B,77), audio (B,3,1,mels,frames)."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    return {
        VISION: torch.randn(batch, 3, config.image_size, config.image_size, generator=g),
        TEXT: torch.randint(0, config.text_vocab_size, (batch, config.text_context_length), generator=g),
        AUDIO: torch.randn(batch, 3, 1, config.audio_n_mels, config.audio_frames, generator=g),
    }  # moved to the device per step, as a data loader would hand them over


def build_on(config: ImageBindConfig, device: torch.device) -> ImageBind:
    """Random weights, initialised on the device (a 1.2 B CPU init takes minutes); buffers follow."""
    torch.manual_seed(0)
    with torch.device(device):
        model = ImageBind(config)
    return model.to(device)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory_gb(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def fine_tune_steps(mode: str, config: ImageBindConfig, batch: int, steps: int, warmup: int,
                    device: torch.device) -> tuple[dict[str, float | int | None], torch.nn.Module]:
    """Train `steps` timed steps (after `warmup`) in `mode` ("lora" or "full"); returns figures and the model."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    model = build_on(config, device)
    model.requires_grad_(False)
    if mode == "lora":
        model = add_imagebind_lora(model, LoraSettings(r=8, alpha=16.0, dropout=0.0), modalities=TOWERS)
    else:
        for modality in TOWERS:
            for p in model.tower_parameters(modality):
                p.requires_grad_(True)
    trainable, total = count_parameters(model)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.05)
    batches = [huge_inputs(config, batch, device, seed=i) for i in range(2)]
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    model.train()
    losses: list[float] = []
    started = 0.0
    for step in range(warmup + steps):
        if step == warmup:
            sync(device)
            started = time.perf_counter()
        inputs = {k: v.to(device, non_blocking=True) for k, v in batches[step % 2].items()}
        with autocast:
            out = model(inputs)
        out = {k: v.float() for k, v in out.items()}
        loss = pair_loss(out[VISION], out[TEXT]) + pair_loss(out[AUDIO], out[VISION])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        losses.append(loss.detach())
    sync(device)
    seconds = time.perf_counter() - started
    figures = {
        "trainable_parameters": trainable, "total_parameters": total, "trainable_share": trainable / total,
        "batch": batch, "timed_steps": steps, "seconds": seconds, "samples_per_s": batch * steps / seconds,
        "step_ms": 1000 * seconds / steps, "peak_memory_gb": peak_memory_gb(device),
        "first_loss": float(losses[0]), "last_loss": float(losses[-1]),
    }
    del optimizer, params
    return figures, model


@torch.no_grad()
def merged_latency(model: torch.nn.Module, config: ImageBindConfig, batch: int, repeats: int,
                   device: torch.device) -> dict[str, float]:
    """Vision forward (bf16) with adapters, then after merging them: median ms over `repeats`, same inputs."""
    x = {VISION: huge_inputs(config, batch, device, seed=99)[VISION].to(device)}
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")

    def median_ms(net: torch.nn.Module) -> tuple[float, torch.Tensor]:
        net.eval()
        times = []
        for i in range(repeats + 3):
            sync(device)
            t = time.perf_counter()
            with autocast:
                y = net(x)[VISION]
            sync(device)
            if i >= 3:
                times.append(1000 * (time.perf_counter() - t))
        return float(np.median(times)), y.float()

    with_adapters_ms, y_adapters = median_ms(model)
    merged = merge_lora(model)
    merged_ms, y_merged = median_ms(merged)
    cos = torch.nn.functional.cosine_similarity(y_adapters, y_merged, dim=-1).min().item()
    return {"batch": batch, "with_adapters_ms": with_adapters_ms, "merged_ms": merged_ms,
            "merged_over_adapters": merged_ms / with_adapters_ms, "min_cosine_adapters_vs_merged": cos}


def huge_check(config: ImageBindConfig, batch: int, steps: int, warmup: int, device: torch.device) -> dict:
    results: dict = {"config": "huge" if config == ImageBindConfig.huge() else "smoke"}
    for mode in ("full", "lora"):
        figures, model = fine_tune_steps(mode, config, batch, steps, warmup, device)
        results[mode] = figures
        print(f"[huge/{mode}] {figures['trainable_parameters']:,} of {figures['total_parameters']:,} trainable "
              f"({100 * figures['trainable_share']:.2f} %), {figures['samples_per_s']:.1f} samples/s, "
              f"peak {figures['peak_memory_gb']} GiB, loss {figures['first_loss']:.3f} -> {figures['last_loss']:.3f}",
              flush=True)
        if mode == "lora":
            results["latency"] = merged_latency(model, config, batch, repeats=10, device=device)
            print(f"[huge/latency] {results['latency']}", flush=True)
        del model
    results["lora_over_full"] = {
        "samples_per_s": results["lora"]["samples_per_s"] / results["full"]["samples_per_s"],
        "peak_memory": (results["lora"]["peak_memory_gb"] / results["full"]["peak_memory_gb"]
                        if results["full"]["peak_memory_gb"] else None),
    }
    return results


# ---- demo training ------------------------------------------------------------------------------


def demo_check(arrays: dict[str, np.ndarray], config: ImageBindConfig, train_config: TrainConfig,
               devices: list[str]) -> dict:
    train = TrainingData(image=arrays["train_image"], audio=arrays["train_audio"], text_emb=arrays["train_text_emb"],
                         label=arrays["train_label"])
    voices = EvalData(image=arrays["voices_image"], audio=arrays["voices_audio"], label=arrays["voices_label"],
                      groups={"voice": list(arrays["voices_voice"])})
    golden = EvalData(image=arrays["golden_image"], audio=arrays["golden_audio"], label=arrays["golden_label"],
                      groups={"voice": list(arrays["golden_voice"])})
    results: dict = {"rows": len(train), "train_config": asdict(train_config)}
    for name in devices:
        result = train_imagebind(train, config, TrainConfig(**{**asdict(train_config), "device": name}))
        results[name] = {
            "train_seconds": result.seconds,
            "audio_text_top1_held_out_voices": evaluate_model(result.model, voices, arrays["prompt_emb"])["zero_shot_audio_acc"],
            "image_text_top1_held_out_images": evaluate_model(result.model, golden, arrays["prompt_emb"])["zero_shot_image_acc"],
            "final_loss": {h["stage"]: h["loss"] for h in result.history},
        }
        print(f"[demo/{name}] {results[name]}", flush=True)
    if len(devices) == 2:
        results["cpu_over_cuda_seconds"] = results[devices[1]]["train_seconds"] / results[devices[0]]["train_seconds"]
    return results


def run(args: argparse.Namespace) -> None:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    report: dict = {"machine": {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__, "python": platform.python_version(), "cpus": os.cpu_count(),
    }}
    print(report["machine"], flush=True)
    if args.smoke:  # the script's own check: tiny sizes on whatever device is there
        huge_config = ImageBindConfig.from_official_kwargs(
            vision_embed_dim=64, vision_num_blocks=2, vision_num_heads=2, text_embed_dim=64, text_num_blocks=2,
            text_num_heads=2, audio_embed_dim=64, audio_num_blocks=2, audio_num_heads=2, depth_embed_dim=32,
            depth_num_blocks=1, depth_num_heads=2, thermal_embed_dim=32, thermal_num_blocks=1, thermal_num_heads=2,
            imu_embed_dim=32, imu_num_blocks=1, imu_num_heads=2, out_embed_dim=32)
        steps, warmup, train_config = 2, 1, shipped_recipe(TrainParams(epochs_stage1=1, epochs_stage2=1))
    else:
        huge_config, steps, warmup, train_config = ImageBindConfig.huge(), args.steps, args.warmup, shipped_recipe(TrainParams())
    report["huge"] = huge_check(huge_config, args.batch, steps, warmup, device)
    if args.arrays is not None:
        with np.load(args.arrays) as handle:
            arrays = {k: handle[k] for k in handle.files}
        devices = ["cuda", "cpu"] if device.type == "cuda" else ["cpu"]
        report["demo"] = demo_check(arrays, ImageBindConfig(), TrainConfig(**{**asdict(train_config), "seed": int(arrays["seed"])}),
                                    devices)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=float) + "\n")
    print(f"wrote {args.out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare", help="demo data → arrays (needs espeak-ng and the MiniLM package)")
    p.add_argument("--out", type=Path, default=PROJECT / ".gpu" / "demo_arrays.npz")
    p.add_argument("--train-samples", type=int, default=2400)
    p.add_argument("--golden-samples", type=int, default=400)
    p.add_argument("--seed", type=int, default=0)
    r = sub.add_parser("run", help="the measurements (on the GPU machine)")
    r.add_argument("--arrays", type=Path, default=None, help="from `prepare`; without it the demo check is skipped")
    r.add_argument("--out", type=Path, default=PROJECT / "benchmarks" / "results" / "gpu_check.json")
    r.add_argument("--batch", type=int, default=32, help="samples per step of the huge check")
    r.add_argument("--steps", type=int, default=10, help="timed steps per mode")
    r.add_argument("--warmup", type=int, default=3, help="untimed steps per mode first")
    r.add_argument("--smoke", action="store_true", help="tiny sizes: checks the script on any machine")
    args = parser.parse_args()
    prepare(args.out, args.train_samples, args.golden_samples, args.seed) if args.command == "prepare" else run(args)


if __name__ == "__main__":
    main()
