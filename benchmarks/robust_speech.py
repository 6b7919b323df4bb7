"""Which measure makes emergent audio→text survive speech training never heard: the ablation behind issue 16.

Every configuration trains the demo ImageBind with the digits example's `train:` recipe
(examples/digits/params.yaml) on two fault-free batches of demo.samples rows, and is scored as
benchmarks/emergent_alignment.py scores it (emergent audio→text zero-shot top-1 on held-out voices,
held-out accents and the held-out engine flite; image→text on held-out images):

  english_only  the voice pool before issue 16: eight English espeak-ng voices
  wide          the shipped pool: ~140 espeak-ng voices of many accents and variants, and festival voices
  cmvn          wide + per-utterance CMVN in the audio tower (ImageBindConfig.audio_cmvn)
  augment       wide + every augmentation at flywheel's defaults (speed, pitch, noise, reverb, gain, masks)
  both          wide + augment + cmvn: the example's shipped recipe
  pitch_only    wide + only the augmentation's mel shift (±3 bins, 80 % of clips)
  conv          wide + the audio conv front end (ImageBindConfig.audio_conv_channels=32)
  wider_tower   wide + audio tower width 128, depth 3

Usage: python benchmarks/robust_speech.py [--configs wide,augment,...] [--eval-samples 800] [--seed 0]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT))

from benchmarks.emergent_alignment import (  # noqa: E402
    EVAL_SEED, EXAMPLE_PARAMS, HELD_OUT_SETS, build_data, example_prompt_embeddings, run_variant, save_report,
    training_data)
from examples.digits.demo import ENGLISH_ONLY_SPEECH  # noqa: E402
from flows.settings import load_params  # noqa: E402
from flows.stage_config import audio_augment  # noqa: E402
from flows.train_params import AudioAugmentParams  # noqa: E402
from models.imagebind import VISION  # noqa: E402

PITCH_ONLY = {"speed_prob": 0.0, "noise_prob": 0.0, "reverb_prob": 0.0, "gain_prob": 0.0, "time_mask_prob": 0.0,
              "freq_mask_prob": 0.0, "pitch_prob": 0.8, "pitch_max_bins": 3.0}
# name -> (training speech, model overrides, augmentation: None off, else train.audio_augment's fields changed)
CONFIGS: dict[str, tuple[str, dict, dict | None]] = {
    "english_only": ("english_only", {}, None),
    "wide": ("wide", {}, None),
    "cmvn": ("wide", {"audio_cmvn": True}, None),
    "augment": ("wide", {}, {}),
    "both": ("wide", {"audio_cmvn": True}, {}),
    "pitch_only": ("wide", {}, PITCH_ONLY),
    "conv": ("wide", {"audio_conv_channels": 32}, None),
    "wider_tower": ("wide", {"audio_width": 128, "audio_depth": 3}, None),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default=",".join(CONFIGS), help=f"comma-separated, of {list(CONFIGS)}")
    parser.add_argument("--eval-samples", type=int, default=800, help="rows of the evaluation batch (a quarter per set)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=PROJECT / "benchmarks" / "results" / "robust_speech.json")
    args = parser.parse_args()
    names = args.configs.split(",")
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        parser.error(f"unknown configs {unknown}; accepted: {list(CONFIGS)}")

    params = load_params(EXAMPLE_PARAMS)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        wide, evaluation, _ = build_data(Path(tmp), params, args.eval_samples, args.seed)
        pools = {"wide": wide}
        if any(CONFIGS[n][0] == "english_only" for n in names):
            pools["english_only"] = training_data(Path(tmp), params, args.seed, speech=ENGLISH_ONLY_SPEECH)
    prompt_emb = example_prompt_embeddings()
    print(f"data {time.perf_counter() - started:.0f} s", flush=True)
    base_augment = audio_augment(AudioAugmentParams())  # flywheel's defaults: every augmentation, off
    results: dict[str, dict] = {}
    for name in names:
        pool, model_overrides, augment = CONFIGS[name]
        recipe = {"audio_augment": replace(base_augment, enabled=False) if augment is None
                  else replace(base_augment, enabled=True, **augment)}
        results[name] = run_variant(VISION, pools[pool], evaluation, prompt_emb, params, model_overrides, recipe)
        r = results[name]
        print(f"{name:14s} " + "  ".join(f"{k} {100 * r['voice_group'][k]:5.1f}" for k in (*HELD_OUT_SETS, "train"))
              + f"  image {100 * r['image_text_top1']:5.1f}  train CPU {r['train_cpu_seconds']:.0f} s", flush=True)
    report = {"results": results, "configs": {n: {"speech": CONFIGS[n][0], "model": CONFIGS[n][1],
                                                  "augment": CONFIGS[n][2]} for n in names},
              "eval_seed": args.seed + EVAL_SEED, "rows": {k: len(v) for k, v in pools.items()}}
    save_report(args.out, report)


if __name__ == "__main__":
    main()
