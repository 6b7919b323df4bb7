"""LoRA against a frozen encoder (head only) and full fine-tuning of the MiniLM text tower.

Task: caption → class (the `lora` family model; the digits example's ten classes), on demo captions from
`examples.digits.demo.generate_demo_batch`: a training batch (seed 0), held-out rows in the same
languages (seed 1, golden split) and held-out rows in languages never trained on (seed 2,
`drift="language"`: Italian and Dutch). Captions that name no number are dropped (no label to
learn). Every method runs the same steps on the same batches, each in its own process so its
memory is its own, at its own learning rate (AdamW; adapters and a fresh head take a larger
step than a full fine-tune).

Reported per method: trainable parameters (count and share), peak RSS during training above
the RSS just before it (the kernel's VmHWM, reset before training; torch's CPU tensors are
invisible to tracemalloc) and the process's peak RSS, median step time, accuracy. Then the serving check:
forward latency of the merged LoRA model, and of the unmerged adapted one, over the base.

    .venv/bin/python benchmarks/lora_vs_full.py            # 3 to 6 minutes on 2 shared cores
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path

import torch
from torch import nn

from examples.digits.demo import GENERIC_CAPTIONS, generate_demo_batch
from flows.settings import LoraParams, TrainParams, load_params
from flows.stage_config import classifier_training, lora_settings
from models.lora import (
    MINILM,
    ClassifierTraining,
    add_text_lora,
    build_caption_classifier,
    count_parameters,
    merge_lora,
    predict_classes,
    tokenize_captions,
    train_classifier,
)

RESULTS = Path(__file__).parent / "results" / "lora_vs_full.json"
EXAMPLE_PARAMS = Path(__file__).resolve().parents[1] / "examples" / "digits" / "params.yaml"
N_CLASSES = len(load_params(EXAMPLE_PARAMS).task.classes)  # the head's outputs; a digit is its class index
SPLITS = {  # name -> generate_demo_batch arguments
    "train": {"seed": 0, "split": "train"},
    "heldout": {"seed": 1, "split": "golden"},
    "unseen_languages": {"seed": 2, "split": "golden", "drift": "language"},
}
NO_NUMBER = {caption for captions in GENERIC_CAPTIONS.values() for caption in captions}


def _freeze_encoder(model: nn.Module) -> nn.Module:
    model.encoder.requires_grad_(False)
    return model


def _add_lora(model: nn.Module) -> nn.Module:
    return add_text_lora(model, lora_settings(LoraParams()))


def _train_everything(model: nn.Module) -> nn.Module:
    return model


# method -> (what trains, learning rate): the usual step size for each, not tuned here.
METHODS: dict[str, tuple[Callable[[nn.Module], nn.Module], float]] = {
    "frozen_head_only": (_freeze_encoder, 1e-2),
    "lora_r8_qv": (_add_lora, 2e-3),
    "full_finetune": (_train_everything, 1e-4),
}


def build_caption_sets(folder: Path, train_samples: int, heldout_samples: int) -> dict[str, dict[str, list]]:
    """Write the demo batches and return {split: {"captions": [...], "digits": [...]}}."""
    sets = {}
    for name, kwargs in SPLITS.items():
        out = folder / name
        samples = train_samples if name == "train" else heldout_samples
        generate_demo_batch(out, samples=samples, fault_rate=0.0, label_rate=0.0, **kwargs)
        truth = {r["sample_id"]: r["digit"] for r in map(json.loads, (out / "_truth.jsonl").read_text().splitlines())}
        rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text(encoding="utf-8").splitlines()]
        rows = [r for r in rows if r["caption"] not in NO_NUMBER]
        sets[name] = {"captions": [r["caption"] for r in rows], "digits": [truth[r["sample_id"]] for r in rows]}
    return sets


def reset_peak_rss() -> int:
    """Reset the kernel's peak-RSS mark (VmHWM) to the current RSS, in bytes (Linux >= 4.0).

    A sampling thread would miss short peaks and compete with training for the GIL; the
    kernel's mark misses nothing and costs nothing.
    """
    Path("/proc/self/clear_refs").write_text("5")
    return _peak_rss()


def _peak_rss() -> int:
    status = Path("/proc/self/status").read_text()
    return 1024 * int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:")))


def _time_ms(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return 1000 * (time.perf_counter() - start)


def latency_ratios(adapted: nn.Module, inputs: dict, reps: int) -> dict[str, float]:
    """Median forward latency of base, adapted (unmerged) and merged models on one batch.

    Calls alternate between the models being compared, so load from other processes on the
    machine falls on both alike.
    """
    base = build_caption_classifier(seed=0, num_classes=N_CLASSES).eval()
    adapted.eval()
    with torch.no_grad():
        base(**inputs), adapted(**inputs)  # warm-up
        pairs = [(_time_ms(lambda: base(**inputs)), _time_ms(lambda: adapted(**inputs))) for _ in range(reps)]
        merged = merge_lora(adapted)
        assert [type(m) for m in merged.modules()] == [type(m) for m in base.modules()], "merge changed the structure"
        merged(**inputs)
        merged_pairs = [(_time_ms(lambda: base(**inputs)), _time_ms(lambda: merged(**inputs))) for _ in range(reps)]
    base_ms = statistics.median([b for b, _ in pairs + merged_pairs])
    adapted_ms = statistics.median([a for _, a in pairs])
    merged_ms = statistics.median([m for _, m in merged_pairs])
    return {
        "batch": int(inputs["input_ids"].shape[0]),
        "reps": reps,
        "base_ms": round(base_ms, 2),
        "merged_ms": round(merged_ms, 2),
        "adapted_unmerged_ms": round(adapted_ms, 2),
        "merged_over_base": round(merged_ms / base_ms, 3),
        "adapted_over_base": round(adapted_ms / base_ms, 3),
    }


def run_method(method: str, sets: dict, training: ClassifierTraining, latency_reps: int) -> dict:
    """Train one method in this process and measure it."""
    prepare, lr = METHODS[method]
    training = replace(training, lr=lr)
    torch.manual_seed(training.seed)
    model = prepare(build_caption_classifier(seed=training.seed, num_classes=N_CLASSES))
    inputs = {name: tokenize_captions(s["captions"]) for name, s in sets.items()}
    labels = {name: torch.tensor(s["digits"]) for name, s in sets.items()}
    trainable, total = count_parameters(model)

    process_peak = _peak_rss()  # loading and tokenising
    rss_before = reset_peak_rss()
    stamps = [(time.perf_counter(), time.process_time())]

    def stamp(_: int) -> None:
        stamps.append((time.perf_counter(), time.process_time()))

    losses = train_classifier(model, inputs["train"], labels["train"], training, stamp)
    training_peak = _peak_rss()
    wall_s = [b[0] - a[0] for a, b in zip(stamps, stamps[1:])]
    cpu_s = [b[1] - a[1] for a, b in zip(stamps, stamps[1:])]  # all threads; less hurt by others' load
    result = {
        "lr": lr,
        "trainable_params": trainable,
        "total_params": total,
        "trainable_percent": round(100 * trainable / total, 4),
        "training_rss_increase_mb": round((training_peak - rss_before) / 2**20, 1),
        "process_peak_rss_mb": round(max(process_peak, training_peak) / 2**20, 1),
        "median_step_ms": round(1000 * statistics.median(wall_s), 1),
        "median_step_cpu_ms": round(1000 * statistics.median(cpu_s), 1),
        "first_loss": round(losses[0], 4),
        "last_loss": round(losses[-1], 4),
    }
    for name in ("train", "heldout", "unseen_languages"):
        predicted = predict_classes(model, inputs[name])
        result[f"accuracy_{name}"] = round(float((predicted == labels[name]).float().mean()), 4)
    if method == "lora_r8_qv":
        latency_inputs = {k: v[:64] for k, v in inputs["heldout"].items()}
        result["latency"] = latency_ratios(copy.deepcopy(model), latency_inputs, latency_reps)
    return result


def _print_table(results: dict) -> None:
    header = f"{'method':<18}{'trainable':>12}{'%':>9}{'train +RSS MB':>15}{'peak RSS MB':>13}{'step ms':>9}{'step cpu ms':>13}" \
             f"{'acc heldout':>13}{'acc unseen lang':>17}"
    print(header)
    for method, r in results["methods"].items():
        print(f"{method:<18}{r['trainable_params']:>12,}{r['trainable_percent']:>9.3f}{r['training_rss_increase_mb']:>15.1f}"
              f"{r['process_peak_rss_mb']:>13.1f}{r['median_step_ms']:>9.1f}{r['median_step_cpu_ms']:>13.1f}{r['accuracy_heldout']:>13.3f}"
              f"{r['accuracy_unseen_languages']:>17.3f}")
    if "lora_r8_qv" not in results["methods"]:
        return
    lat = results["methods"]["lora_r8_qv"]["latency"]
    print(f"inference, batch {lat['batch']}: base {lat['base_ms']} ms, merged LoRA {lat['merged_ms']} ms "
          f"(x{lat['merged_over_base']}), unmerged adapters {lat['adapted_unmerged_ms']} ms (x{lat['adapted_over_base']})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--train-samples", type=int, default=600)
    parser.add_argument("--heldout-samples", type=int, default=300)
    parser.add_argument("--latency-reps", type=int, default=15)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--child", help=argparse.SUPPRESS)  # internal: "<method>:<captions.json>"
    args = parser.parse_args()
    training = classifier_training(LoraParams(steps=args.steps, batch_size=args.batch_size), TrainParams().seed)

    if args.child:
        method, data = args.child.split(":", 1)
        sets = json.loads(Path(data).read_text(encoding="utf-8"))
        print(json.dumps(run_method(method, sets, training, args.latency_reps)))
        return

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        sets = build_caption_sets(Path(tmp), args.train_samples, args.heldout_samples)
        data = Path(tmp) / "captions.json"
        data.write_text(json.dumps(sets), encoding="utf-8")
        print(f"demo captions in {time.perf_counter() - start:.1f} s: " + ", ".join(f"{k} {len(v['captions'])}" for k, v in sets.items()))
        train_captions = set(sets["train"]["captions"])
        methods = {}
        for method in args.methods:
            start = time.perf_counter()
            command = [sys.executable, __file__, "--child", f"{method}:{data}", "--steps", str(args.steps),
                       "--batch-size", str(args.batch_size), "--latency-reps", str(args.latency_reps)]
            out = subprocess.run(command, check=True, capture_output=True, text=True, env=os.environ).stdout
            methods[method] = json.loads(out.strip().splitlines()[-1])
            print(f"{method}: {time.perf_counter() - start:.0f} s")

    results = {
        "task": "caption -> digit, MiniLM (all-MiniLM-L6-v2) mean-pooled + linear head",
        "steps": args.steps,
        "batch_size": args.batch_size,
        "lora": {**asdict(lora_settings(LoraParams())), "target_modules": list(lora_settings(LoraParams()).targets_for(MINILM))},
        "rows": {k: len(v["captions"]) for k, v in sets.items()},
        "heldout_captions_seen_in_training": round(
            sum(c in train_captions for c in sets["heldout"]["captions"]) / len(sets["heldout"]["captions"]), 3),
        "unseen_language_captions_seen_in_training": round(
            sum(c in train_captions for c in sets["unseen_languages"]["captions"]) / len(sets["unseen_languages"]["captions"]), 3),
        "memory": "kernel peak RSS (VmHWM), reset through /proc/self/clear_refs just before training; "
                  "training increase = peak during training - RSS before it; one process per method",
        "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
                    "torch": torch.__version__, "load_average_1m": round(os.getloadavg()[0], 2)},
        "methods": methods,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    _print_table(results)


if __name__ == "__main__":
    main()
