"""Does speech augmentation or per-utterance CMVN make emergent audio→text survive voices training never heard?

Trains the demo ImageBind with the digits example's `train:` recipe (examples/digits/params.yaml) on
two fault-free demo batches of the usual English espeak-ng voices, once per configuration:

  baseline   the shipped recipe: no augmentation, fixed log-mel standardisation
  cmvn       per-utterance CMVN in the audio tower (ImageBindConfig.audio_cmvn)
  augment    train.audio_augment.enabled (speed, pitch, noise, reverb, gain, SpecAugment masks)
  both       augment + cmvn

and scores emergent audio→text zero-shot top-1 (no (audio, text) pair is ever trained on) on
  variants   held-out espeak-ng voice variants of English (HELD_OUT_VARIANTS: never in training)
  accents    the demo's `accent` drift: espeak-ng's non-English voices (examples.digits.demo.UNSEEN_VOICES)
             reading the English words
  noise      the demo's `noise` drift: training voices under additive noise
  golden     a golden batch (training voices, held-out images): image→text must stay ≥ 95 %
`--paired` adds the text-paired baseline of each configuration (audio trained on captions directly).

Usage: python benchmarks/robust_speech.py [--epochs-scale 1.0] [--configs baseline,cmvn,augment,both] [--paired]
"""

from __future__ import annotations

import argparse
import subprocess
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

from benchmarks.emergent_alignment import (  # noqa: E402
    EXAMPLE_PARAMS, SAMPLE_RATE, SILENCE_DB, example_prompt_embeddings, load_batch, save_report)
from examples.digits.demo import ENGLISH_VOICES, UNSEEN_VOICES, generate_demo_batch  # noqa: E402
from examples.digits.vocabulary import DIGIT_WORDS  # noqa: E402
from flows.settings import load_params  # noqa: E402
from flows.stage_config import train_config  # noqa: E402
from models.evaluate import EvalData, evaluate_model, predict_zero_shot  # noqa: E402
from models.imagebind import AUDIO, TEXT, VISION, ImageBindConfig  # noqa: E402
from models.text import encode_texts  # noqa: E402
from models.train import TrainingData, train_imagebind  # noqa: E402
from models.transforms import prepare_waveform, waveform_to_log_mel  # noqa: E402

# espeak-ng variants (`+name`) on English voices: none is in the training pool (ENGLISH_VOICES).
HELD_OUT_VARIANTS = ("en-us+m3", "en-gb+m7", "en-us+f3", "en-gb+klatt", "en-us+croak", "en+Andy")
CONFIGS = {"baseline": (False, False), "cmvn": (False, True), "augment": (True, False), "both": (True, True)}
KNOWN_LABEL_RATE = 0.2  # share of training rows with a human label (params.yaml demo.label_rate)


def render_variants(out: Path, config: ImageBindConfig, takes: int, seed: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(audio (N, T, M), digit (N,), voice (N,)): every held-out variant speaking every digit `takes` times,
    at speeds and pitches drawn from the demo's ranges."""
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    audio, digits, voices = [], [], []
    for voice in HELD_OUT_VARIANTS:
        for digit, word in enumerate(DIGIT_WORDS["en"]):
            for take in range(takes):
                path = out / f"{voice}-{digit}-{take}.wav"
                speed, pitch = int(rng.integers(120, 201)), int(rng.integers(30, 71))
                subprocess.run(["espeak-ng", "-w", str(path), "-v", voice, "-s", str(speed), "-p", str(pitch), word],
                               check=True, capture_output=True)
                wave, rate = sf.read(path, dtype="float32", always_2d=True)
                mono = prepare_waveform(wave, rate, SAMPLE_RATE, SILENCE_DB)
                audio.append(waveform_to_log_mel(mono, SAMPLE_RATE, config.audio_n_mels, config.audio_frames))
                digits.append(digit)
                voices.append(voice)
    return np.stack(audio), np.array(digits, dtype=np.int64), voices


def build_data(work: Path, samples: int, eval_samples: int, seed: int, config: ImageBindConfig) -> tuple[TrainingData, dict, float]:
    """Training data of two demo batches, the held-out evaluation sets, and the seconds it took."""
    started = time.perf_counter()
    batches = []
    for i in range(2):
        generate_demo_batch(work / f"train-{i}", samples=samples, seed=seed + i, fault_rate=0.0, label_rate=KNOWN_LABEL_RATE)
        batches.append(load_batch(work / f"train-{i}", config))
    merged = {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}
    assert set(merged["voice"]) <= set(ENGLISH_VOICES), "training holds the English voices only"
    train = TrainingData(image=merged["image"], audio=merged["audio"], text_emb=encode_texts(list(merged["caption"])),
                         label=merged["human_label"])
    sets: dict[str, dict] = {}
    for name, drift, split_seed in (("accents", "accent", 101), ("noise", "noise", 102)):
        generate_demo_batch(work / name, samples=eval_samples, seed=seed + split_seed, drift=drift, golden=True)
        sets[name] = load_batch(work / name, config)
    generate_demo_batch(work / "golden", samples=eval_samples, seed=seed + 103, golden=True)
    sets["golden"] = load_batch(work / "golden", config)
    audio, digit, voice = render_variants(work / "variants", config, takes=3, seed=seed + 104)
    sets["variants"] = {"audio": audio, "digit": digit, "voice": np.array(voice)}
    return train, sets, time.perf_counter() - started


def score_audio(model, batch: dict, prompt_emb: np.ndarray) -> dict[str, float]:
    """Audio→text zero-shot top-1 overall and per voice."""
    predicted, _ = predict_zero_shot(model, AUDIO, batch["audio"], prompt_emb)
    correct = predicted == batch["digit"]
    per_voice = {str(v): float(correct[batch["voice"] == v].mean()) for v in sorted(set(batch["voice"]))}
    return {"top1": float(correct.mean()), "per_voice": per_voice}


def run_config(name: str, anchor: str, train: TrainingData, sets: dict, prompt_emb: np.ndarray,
               params, epochs_scale: float) -> dict:
    augment_on, cmvn_on = CONFIGS[name]
    t, tr = params.transform, params.train
    model_config = ImageBindConfig(embed_dim=tr.embed_dim, image_size=t.image_size, audio_n_mels=t.n_mels,
                                   audio_frames=t.audio_frames, audio_cmvn=cmvn_on)
    recipe = train_config(tr, audio_anchor=anchor)
    recipe = replace(recipe, epochs_stage1=round(recipe.epochs_stage1 * epochs_scale),
                     epochs_stage2=round(recipe.epochs_stage2 * epochs_scale),
                     audio_augment=replace(recipe.audio_augment, enabled=augment_on))
    cpu_before = time.process_time()
    result = train_imagebind(train, model_config, recipe)
    scores = {set_name: score_audio(result.model, batch, prompt_emb) for set_name, batch in sets.items()}
    golden = sets["golden"]
    image = evaluate_model(result.model, EvalData(image=golden["image"], label=golden["digit"], audio=golden["audio"]),
                           prompt_emb)
    return {"audio_text_top1": {k: v["top1"] for k, v in scores.items()},
            "per_voice": {k: v["per_voice"] for k, v in scores.items() if k != "golden"},
            "image_text_top1": image["zero_shot_image_acc"], "train_seconds": result.seconds,
            "train_cpu_seconds": time.process_time() - cpu_before,
            "epochs": [recipe.epochs_stage1, recipe.epochs_stage2]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=600, help="rows of each of the two training batches (demo.samples)")
    parser.add_argument("--eval-samples", type=int, default=200, help="rows of each demo-generated evaluation batch")
    parser.add_argument("--epochs-scale", type=float, default=1.0, help="share of the recipe's epochs (smaller: faster)")
    parser.add_argument("--configs", default=",".join(CONFIGS), help=f"comma-separated, of {list(CONFIGS)}")
    parser.add_argument("--paired", action="store_true", help="also train each configuration's text-paired baseline")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=PROJECT / "benchmarks" / "results" / "robust_speech.json")
    args = parser.parse_args()
    names = args.configs.split(",")
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        parser.error(f"unknown configs {unknown}; accepted: {list(CONFIGS)}")

    params = load_params(EXAMPLE_PARAMS)
    t = params.transform
    data_config = ImageBindConfig(image_size=t.image_size, audio_n_mels=t.n_mels, audio_frames=t.audio_frames)
    with tempfile.TemporaryDirectory() as tmp:
        train, sets, data_seconds = build_data(Path(tmp), args.samples, args.eval_samples, args.seed, data_config)
    prompt_emb = example_prompt_embeddings()
    print(f"{len(train)} training rows; eval rows " + ", ".join(f"{k} {len(v['digit'])}" for k, v in sets.items())
          + f"; data {data_seconds:.0f} s", flush=True)
    anchors = {"emergent": VISION, **({"paired": TEXT} if args.paired else {})}
    results: dict[str, dict] = {}
    for name in names:
        for kind, anchor in anchors.items():
            key = name if kind == "emergent" else f"{name}/paired"
            results[key] = run_config(name, anchor, train, sets, prompt_emb, params, args.epochs_scale)
            r = results[key]
            print(f"{key:16s} " + "  ".join(f"{k} {100 * v:5.1f}" for k, v in r["audio_text_top1"].items())
                  + f"  image {100 * r['image_text_top1']:5.1f}  train {r['train_seconds']:.0f} s", flush=True)
    report = {
        "results": results, "configs": {n: dict(zip(("augment", "cmvn"), CONFIGS[n])) for n in names},
        "held_out_variants": list(HELD_OUT_VARIANTS), "held_out_accents": list(UNSEEN_VOICES),
        "training_voices": list(ENGLISH_VOICES),
        "rows": {"train": len(train), **{k: len(v["digit"]) for k, v in sets.items()}},
        "data_seconds": data_seconds, "epochs_scale": args.epochs_scale,
        "audio_augment": asdict(train_config(params.train).audio_augment),
    }
    save_report(args.out, report)


if __name__ == "__main__":
    main()
