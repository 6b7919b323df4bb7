"""Emergent audio→text alignment on speech training never heard, against a text-paired audio tower.

ImageBind's claim (Girdhar et al., CVPR 2023, Table 2): binding audio to images alone gives
audio↔text retrieval close to training on audio-text pairs (ESC-50 zero-shot 66.9 emergent
against 68.6 text-paired). This script measures the same comparison on the digits example,
trained as `make run` trains its champion (examples/digits/params.yaml `train:`):

  emergent  ImageBind's recipe: stage 1 (image, text), stage 2 (audio, image), vision frozen;
            no (audio, text) pair is ever seen
  paired    the same stage 1, then stage 2 on (audio, caption) pairs of the same rows, same
            steps (TrainConfig.audio_anchor="text")

Data: two fault-free landing batches of demo.samples rows, as `make run` makes them (espeak-ng
and festival voices only), and an evaluation batch drawn like the golden batch (disjoint source
images) whose rows fall into the sets of examples/digits/speech.py:
  held_out_voices   English espeak-ng voices and variants training never hears
  held_out_accents  espeak-ng's de, es, fr, hi, it, pl, ru and vi voices reading the English words
  held_out_engine   flite (CMU ARCTIC speakers awb, rms, slt), an engine training never hears
  train             training speech on held-out images
Clips are prepared as serving prepares a file (mono 16 kHz, silence trimmed, log-mel); prompts
are the example's task.prompts, worded unlike any caption.

Targets (issue 16): emergent audio→text top-1 ≥ 90 % on held-out accents and ≥ 85 % on the
held-out engine, within 3 points of text-paired on each set; image→text ≥ 95 %; training both
stages at most twice the CPU time of the recipe before issue 16 (eight English espeak-ng voices, no
augmentation or CMVN: the `before` variant), trained in the same run on the same machine. The issue
quoted 41 s for it on its author's machine; machines here differ by ×1.7.
Usage: python benchmarks/emergent_alignment.py [--eval-samples 800] [--seed 0] [--out FILE] [--params FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT))

from features.env import apply_process_environment  # noqa: E402

apply_process_environment()

import soundfile as sf  # noqa: E402
from PIL import Image  # noqa: E402

from examples.digits.demo import ENGLISH_ONLY_SPEECH, generate_demo_batch  # noqa: E402
from features.task import build_prompts  # noqa: E402
from flows.settings import Params, load_params  # noqa: E402
from flows.stage_config import imagebind_config, params_input_spec, train_config  # noqa: E402
from models.evaluate import EvalData, evaluate_model, predict_zero_shot  # noqa: E402
from models.imagebind import AUDIO, TEXT, VISION, ImageBindConfig  # noqa: E402
from models.text import encode_class_prompts, encode_texts  # noqa: E402
from models.train import TrainingData, train_imagebind  # noqa: E402
from models.transforms import image_to_input, prepare_waveform, waveform_to_log_mel  # noqa: E402

EXAMPLE_PARAMS = PROJECT / "examples" / "digits" / "params.yaml"
SAMPLE_RATE, SILENCE_DB = 16_000, 40.0  # params.yaml clean: the pipeline's own preparation
KNOWN_LABEL_RATE = 0.2  # share of training rows with a human label (params.yaml demo.label_rate)
TRAIN_SEEDS = (1, 2)  # `make run`'s batch-001 and batch-002
EVAL_SEED = 5000  # far from the training batches' and the golden batch's (1000)
HELD_OUT_SETS = ("held_out_voices", "held_out_accents", "held_out_engine")
PAPER = {"emergent": 66.9, "paired": 68.6}  # ESC-50 zero-shot top-1, ImageBind Table 2
TARGETS = {"held_out_accents": 0.90, "held_out_engine": 0.85, "max_gap_points": 3.0, "image_text_top1": 0.95,
           "train_cpu_ratio_to_before": 2.0}


def example_prompt_embeddings(task=None) -> np.ndarray:
    """(K, 384) frozen-encoder embeddings of a task's prompts (the digits example's without one), one row per class."""
    task = task if task is not None else load_params(EXAMPLE_PARAMS).task
    return encode_class_prompts(build_prompts(tuple(str(c) for c in task.classes), task.prompts))


def load_batch(folder: Path, config: ImageBindConfig) -> dict[str, np.ndarray]:
    """A fault-free landing batch → model inputs, caption, voice, engine, voice group and true digit per row."""
    rows = [json.loads(line) for line in (folder / "manifest.jsonl").read_text().splitlines()]
    truth = {t["sample_id"]: t["digit"] for t in map(json.loads, (folder / "_truth.jsonl").read_text().splitlines())}

    def audio(path: Path) -> np.ndarray:
        wave, rate = sf.read(path, dtype="float32", always_2d=True)
        mono = prepare_waveform(wave, rate, SAMPLE_RATE, SILENCE_DB)
        return waveform_to_log_mel(mono, SAMPLE_RATE, config.audio_n_mels, config.audio_frames)

    def image(path: Path) -> np.ndarray:
        with Image.open(path) as handle:
            return image_to_input(np.asarray(handle.convert("L")), config.image_size)

    return {
        "image": np.stack([image(folder / r["image"]) for r in rows]),
        "audio": np.stack([audio(folder / r["audio"]) for r in rows]),
        "caption": np.array([r["caption"] for r in rows]),
        "voice": np.array([r["voice"] for r in rows]),
        "engine": np.array([r["engine"] for r in rows]),
        "voice_group": np.array([r["voice_group"] for r in rows]),
        "human_label": np.array([-1 if r["label"] is None else r["label"] for r in rows], dtype=np.int64),
        "digit": np.array([truth[r["sample_id"]] for r in rows], dtype=np.int64),
    }


def data_config(params: Params) -> ImageBindConfig:
    """The input sizes the pipeline prepares (transform:), for loading clips and images."""
    t = params.transform
    return ImageBindConfig(image_size=t.image_size, audio_n_mels=t.n_mels, audio_frames=t.audio_frames)


def training_data(work: Path, params: Params, seed: int, speech=None) -> TrainingData:
    """`make run`'s two fault-free batches as training data; `speech` replaces who speaks them (None: the
    example's training speech)."""
    config = data_config(params)
    batches = []
    for train_seed in TRAIN_SEEDS:
        folder = work / f"train-{train_seed}" if speech is None else work / f"train-{train_seed}-own-speech"
        generate_demo_batch(folder, samples=params.demo.samples, seed=seed + train_seed, fault_rate=0.0,
                            label_rate=KNOWN_LABEL_RATE, speech=speech)
        batches.append(load_batch(folder, config))
    merged = {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}
    assert set(merged["voice_group"]) == {"train"}, "training batches hold training speech only"
    assert set(merged["engine"]) <= {"espeak-ng", "festival"}, "training hears espeak-ng and festival only"
    return TrainingData(image=merged["image"], audio=merged["audio"], text_emb=encode_texts(list(merged["caption"])),
                        label=merged["human_label"])


def build_data(work: Path, params: Params, eval_samples: int, seed: int) -> tuple[TrainingData, dict, dict]:
    """(training data of `make run`'s two batches, the evaluation batch, seconds spent)."""
    started = time.perf_counter()
    train = training_data(work, params, seed)
    generated = time.perf_counter()
    generate_demo_batch(work / "eval", samples=eval_samples, seed=seed + EVAL_SEED, golden=True)
    evaluation = load_batch(work / "eval", data_config(params))
    return train, evaluation, {"data_seconds": time.perf_counter() - started,
                                "eval_data_seconds": time.perf_counter() - generated}


def model_config(params: Params, **overrides: object) -> ImageBindConfig:
    """The model the imagebind family builds from params.yaml (flows/families/imagebind.py), plus overrides."""
    return replace(imagebind_config(params.train, params_input_spec(params)), **overrides)


def score_speech(model, evaluation: dict, prompt_emb: np.ndarray) -> dict:
    """Audio→text zero-shot top-1 per voice group, per engine and per voice."""
    predicted, _ = predict_zero_shot(model, AUDIO, evaluation["audio"], prompt_emb)
    correct = predicted == evaluation["digit"]

    def by(field: str) -> dict[str, float]:
        return {str(v): float(correct[evaluation[field] == v].mean()) for v in sorted(set(evaluation[field]))}

    return {"voice_group": by("voice_group"), "engine": by("engine"), "voice": by("voice"),
            "rows": {str(v): int((evaluation["voice_group"] == v).sum()) for v in sorted(set(evaluation["voice_group"]))}}


def run_variant(anchor: str, train: TrainingData, evaluation: dict, prompt_emb: np.ndarray, params: Params,
                model_overrides: dict | None = None, recipe_overrides: dict | None = None) -> dict:
    """Train one variant with the example's recipe and score it on every set."""
    config = model_config(params, **(model_overrides or {}))
    recipe = replace(train_config(params.train, params.clean.sample_rate, audio_anchor=anchor), **(recipe_overrides or {}))
    cpu_before = time.process_time()  # CPU seconds of this process: what a busy shared machine does not inflate
    result = train_imagebind(train, config, recipe)
    cpu_seconds = time.process_time() - cpu_before
    image = evaluate_model(result.model, EvalData(image=evaluation["image"], label=evaluation["digit"]), prompt_emb)
    return {**score_speech(result.model, evaluation, prompt_emb),
            "image_text_top1": image["zero_shot_image_acc"], "train_seconds": result.seconds,
            "train_cpu_seconds": cpu_seconds, "torch_threads": _torch_threads()}


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def print_table(results: dict[str, dict]) -> None:
    emergent, paired = results["emergent"], results["paired"]
    print("\nZero-shot audio→text top-1 (%)        emergent   text-paired   gap")
    print(f"  ImageBind paper, ESC-50             {PAPER['emergent']:8.1f}   {PAPER['paired']:11.1f}"
          f"   {PAPER['paired'] - PAPER['emergent']:+5.1f}")
    for name in (*HELD_OUT_SETS, "train"):
        e, p = emergent["voice_group"][name], paired["voice_group"][name]
        print(f"  {name:34s}{100 * e:8.1f}   {100 * p:11.1f}   {100 * (p - e):+5.1f}")
    print(f"Image→text top-1 on held-out images   {100 * emergent['image_text_top1']:8.1f}"
          f"   {100 * paired['image_text_top1']:11.1f}")
    print(f"Training seconds (both stages)        {emergent['train_seconds']:8.1f}   {paired['train_seconds']:11.1f}"
          f"   (load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)")
    print(f"Training CPU seconds                  {emergent['train_cpu_seconds']:8.1f}   {paired['train_cpu_seconds']:11.1f}")
    before = results["before"]
    print("The recipe before issue 16 (emergent): " + ", ".join(f"{k} {100 * before['voice_group'][k]:.1f}"
                                                              for k in HELD_OUT_SETS)
          + f"; {before['train_cpu_seconds']:.1f} CPU s, so this recipe takes "
          f"x{emergent['train_cpu_seconds'] / before['train_cpu_seconds']:.2f} (bound x2)")
    print("\nPer voice, emergent (%):")
    for voice, value in emergent["voice"].items():
        print(f"  {voice:28s}{100 * value:6.1f}   paired {100 * paired['voice'][voice]:6.1f}")


def checks(results: dict[str, dict]) -> dict[str, bool]:
    emergent, paired = results["emergent"], results["paired"]
    gaps = {name: 100 * (paired["voice_group"][name] - emergent["voice_group"][name]) for name in HELD_OUT_SETS}
    return {
        "held_out_accents": emergent["voice_group"]["held_out_accents"] >= TARGETS["held_out_accents"],
        "held_out_engine": emergent["voice_group"]["held_out_engine"] >= TARGETS["held_out_engine"],
        **{f"gap_within_3_points.{name}": gap <= TARGETS["max_gap_points"] for name, gap in gaps.items()},
        "image_text_top1": emergent["image_text_top1"] >= TARGETS["image_text_top1"],
        "train_cpu_ratio_to_before": (emergent["train_cpu_seconds"] / results["before"]["train_cpu_seconds"]
                                      <= TARGETS["train_cpu_ratio_to_before"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--eval-samples", type=int, default=800, help="rows of the evaluation batch (a quarter per set)")
    parser.add_argument("--seed", type=int, default=0, help="offset of every batch's seed, and the training seed")
    parser.add_argument("--out", type=Path, default=PROJECT / "benchmarks" / "results" / "emergent_alignment.json")
    parser.add_argument("--params", type=Path, default=EXAMPLE_PARAMS,
                        help="the params.yaml whose train: recipe is measured (a candidate's copy of the example's)")
    args = parser.parse_args()

    params = load_params(args.params)
    params = params.model_copy(update={"train": params.train.model_copy(update={"seed": params.train.seed + args.seed})})
    with tempfile.TemporaryDirectory() as tmp:
        train, evaluation, data_seconds = build_data(Path(tmp), params, args.eval_samples, args.seed)
        before_train = training_data(Path(tmp), params, args.seed, speech=ENGLISH_ONLY_SPEECH)
    prompt_emb = example_prompt_embeddings(params.task)  # the file --params named, read once
    print(f"{len(train)} training rows ({(train.label >= 0).mean():.0%} labelled); evaluation rows per set "
          f"{ {str(k): int((evaluation['voice_group'] == k).sum()) for k in sorted(set(evaluation['voice_group']))} }; "
          f"data {data_seconds['data_seconds']:.0f} s", flush=True)
    results = {name: run_variant(anchor, train, evaluation, prompt_emb, params)
               for name, anchor in (("emergent", VISION), ("paired", TEXT))}
    # The recipe before issue 16, same machine and run: the yardstick of the training-time bound.
    before_recipe = {"audio_augment": replace(train_config(params.train, params.clean.sample_rate).audio_augment, enabled=False)}
    results["before"] = run_variant(VISION, before_train, evaluation, prompt_emb, params,
                                    {"audio_cmvn": False, "audio_mel_max_shift": 0, "audio_mel_pool_channels": 0},
                                    before_recipe)
    print_table(results)
    passed = checks(results)
    print("targets:", {k: "pass" if v else "MISS" for k, v in passed.items()})
    report = {
        "results": results, "targets": TARGETS, "checks": passed, "paper_esc50_top1": PAPER,
        "rows": {"train": len(train), "train_labelled": int((train.label >= 0).sum()),
                 **{str(k): int((evaluation["voice_group"] == k).sum()) for k in sorted(set(evaluation["voice_group"]))}},
        **data_seconds, "train_config": asdict(train_config(params.train, params.clean.sample_rate)),
        "model_config": model_config(params).to_dict(),
    }
    save_report(args.out, report)


def save_report(out: Path, report: dict) -> None:
    """The report as JSON at `out`, with the machine it was measured on (cores, Python, load)."""
    machine = {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
               "load_average_1m": os.getloadavg()[0]}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({**report, "machine": machine}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
