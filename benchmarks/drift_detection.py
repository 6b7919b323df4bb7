"""Detection quality of the monitor's checks on demo data: every drift kind must be caught in its
first drifted batch, naming the affected modality or feature, and 20 unchanged batches (different
seeds) must raise no alarm at all.

A reference batch is generated, cleaned and featurised as the lifecycle does, an ImageBind is
trained on it with params.yaml's shipped recipe (the champion stand-in; its zero-shot accuracy on the
reference is recorded, so prediction drift judges a model that predicts the class), and each current batch (clean rows, as `flywheel monitor`
reads them) is checked against it with `monitoring.checks.run_checks` and params.yaml's thresholds.
Writes benchmarks/results/drift_detection.json; a few minutes on 2 cores.

    .venv/bin/python benchmarks/drift_detection.py [--samples 300] [--clean-seeds 20] [--clean-seed-start 5000]

The no-drift seeds default to 5000-5019, not 3000-3019 on which monitor.noise_sigmas was tuned.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from features.env import apply_process_environment

apply_process_environment()

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from examples.digits.demo import DRIFT_KINDS, generate_demo_batch  # noqa: E402
from features.transform import CATEGORICAL_FEATURES, NUMERIC_FEATURES  # noqa: E402
from flows import stage_config  # noqa: E402
from flows.settings import load_params  # noqa: E402
from monitoring.checks import CheckParams, MonitorData, run_checks  # noqa: E402
from monitoring.drift_quality import prepare_window, train_reference_model, zero_shot_accuracy  # noqa: E402
from monitoring.observations import build_monitor_data  # noqa: E402

PROJECT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results" / "drift_detection.json"
# What each kind must be caught by: a "check:item" finding whose item is in this set.
EXPECTED: dict[str, set[str]] = {
    "accent": {"embedding_drift:audio", "data_drift:aud_pitch_hz", "data_drift:aud_centroid_hz", "data_drift:aud_seconds",
               "data_drift:aud_silence_ratio", "prediction_drift:audio", "performance:audio"},
    "noise": {f"{check}:{feature}" for check in ("data_drift", "data_quality") for feature in NUMERIC_FEATURES if feature.startswith("aud_")}
    | {"embedding_drift:audio", "prediction_drift:audio"},
    "rotation": {f"{check}:{feature}" for check in ("data_drift", "data_quality") for feature in NUMERIC_FEATURES if feature.startswith("img_")}
    | {"embedding_drift:image", "prediction_drift:image"},
    "class_prior": {"prediction_drift:image", "prediction_drift:audio"},
    "language": {"data_drift:language", "data_drift:cap_language_detected", "data_drift:cap_chars", "data_drift:cap_words"},
    "gain": {f"{check}:{feature}" for check in ("data_drift", "data_quality") for feature in NUMERIC_FEATURES if feature.startswith("aud_")}
    | {"embedding_drift:audio"},
}


def check_params_from(params_path: Path) -> CheckParams:
    """The thresholds of params.yaml's `monitor:` section, as flows.monitor_stage builds them."""
    from flows import monitor_stage

    class _Settings:  # check_params reads settings.params.monitor only
        params = load_params(params_path)

    return monitor_stage.check_params(_Settings())  # type: ignore[arg-type]


def champion_recipe(params_path: Path):
    """The shipped training recipe of params.yaml (`train:` and `transform:`), as flows.model_stages builds it."""
    params = load_params(params_path)
    return (stage_config.imagebind_config(params.train, stage_config.params_input_spec(params)),
            stage_config.train_config(params.train, params.clean.sample_rate))


def detect(reference: MonitorData, current: MonitorData, params: CheckParams) -> dict:
    result = run_checks(reference, current, list(NUMERIC_FEATURES), list(CATEGORICAL_FEATURES), params)
    scores = {f"{name}:{item}": round(float(entry.get("score", entry.get("out_of_range_share", entry.get("drop", 0.0)) or 0.0)), 4)
              for name, check in result.checks.items() for item, entry in check["items"].items()}
    return {"alarm": result.drift_detected, "findings": result.findings, "scores": scores}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=300, help="rows per current batch")
    parser.add_argument("--reference-samples", type=int, default=1000, help="rows of the champion's window (the demo's batch size)")
    parser.add_argument("--clean-seeds", type=int, default=20)
    parser.add_argument("--clean-seed-start", type=int, default=5000,
                        help="first no-drift seed (the thresholds were tuned on 3000-3019: judge on others)")
    parser.add_argument("--kinds", nargs="*", default=list(DRIFT_KINDS))
    parser.add_argument("--params", type=Path, default=PROJECT / "params.yaml")
    args = parser.parse_args()
    from flows.settings import load_settings
    from flows.stage_config import clean_params, input_spec
    from models.text import encode_class_prompts

    started = time.perf_counter()
    settings = load_settings(params_path=args.params)  # the project's task, clean and transform sections
    params, spec, clean = check_params_from(args.params), input_spec(settings), clean_params(settings)
    task_prompts = settings.task.prompts
    model_config, train_config = champion_recipe(args.params)
    out: dict = {"samples": args.samples, "reference_samples": args.reference_samples,
                 "clean_seed_start": args.clean_seed_start,
                 "champion": {"epochs_stage1": train_config.epochs_stage1, "epochs_stage2": train_config.epochs_stage2,
                              "embed_dim": model_config.embed_dim},
                 "kinds": {}, "clean": {}}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        generate_demo_batch(root / "landing-ref", samples=args.reference_samples, seed=1000)
        features, inputs, labels = prepare_window(root / "landing-ref", root / "lake", spec, clean)
        trained = time.perf_counter()
        model, prompts = train_reference_model(inputs, labels, model_config, train_config), encode_class_prompts(task_prompts)
        out["champion"]["train_seconds"] = round(time.perf_counter() - trained, 1)
        out["champion"]["reference_zero_shot_accuracy"] = zero_shot_accuracy(model, inputs, labels, prompts)
        print("champion", out["champion"], flush=True)
        reference = build_monitor_data(features, inputs, model, prompts, labels)

        def judge(name: str, seed: int, drift: str | None) -> dict:
            generate_demo_batch(root / name, samples=args.samples, seed=seed, drift=drift)
            features, inputs, labels = prepare_window(root / name, root / "lake", spec, clean)
            current = build_monitor_data(features, inputs, model, prompts, labels)
            return detect(reference, current, params)

        for k, kind in enumerate(args.kinds):
            outcome = judge(f"drift-{kind}", 2000 + k, kind)
            outcome["named_expected"] = sorted(set(outcome["findings"]) & EXPECTED[kind])
            outcome["detected"] = bool(outcome["named_expected"])
            out["kinds"][kind] = outcome
            print(kind, outcome["detected"], outcome["findings"], flush=True)
        for seed in range(args.clean_seed_start, args.clean_seed_start + args.clean_seeds):
            outcome = judge(f"clean-{seed}", seed, None)
            out["clean"][str(seed)] = outcome
            print("clean", seed, outcome["alarm"], outcome["findings"], flush=True)
    clean_scores = pd.DataFrame([o["scores"] for o in out["clean"].values()])
    out["clean_max_scores"] = {k: float(v) for k, v in clean_scores.max().items()}
    out["all_kinds_detected"] = all(o["detected"] for o in out["kinds"].values())
    out["false_alarms"] = sum(o["alarm"] for o in out["clean"].values())
    out["seconds"] = round(time.perf_counter() - started, 1)
    out["load_1m"] = os.getloadavg()[0]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps({k: out[k] for k in ("all_kinds_detected", "false_alarms", "seconds")}))
    print("named:", {kind: o["named_expected"] for kind, o in out["kinds"].items()})


if __name__ == "__main__":
    main()
