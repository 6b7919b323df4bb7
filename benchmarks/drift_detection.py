"""Detection quality of the monitor's checks on demo data: every drift kind must be caught in its
first drifted batch, naming the affected modality or feature, and 20 unchanged batches (different
seeds) must raise no alarm at all.

A reference batch is generated, cleaned and featurised as the lifecycle does, a small ImageBind is
trained on it (the champion stand-in), and each current batch (clean rows, as `flywheel monitor`
reads them) is checked against it with `monitoring.checks.run_checks` and params.yaml's thresholds.
Writes benchmarks/results/drift_detection.json; a few minutes on 2 cores.

    .venv/bin/python benchmarks/drift_detection.py [--samples 300] [--clean-seeds 20]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from flows.env import apply_process_environment

apply_process_environment()

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from features.clean import clean_batch  # noqa: E402
from features.demo import DRIFT_KINDS, generate_demo_batch  # noqa: E402
from features.ingest import ingest_batch  # noqa: E402
from features.transform import CATEGORICAL_FEATURES, NUMERIC_FEATURES, compute_sample_features  # noqa: E402
from flows.settings import load_params  # noqa: E402
from models.inputs import InputSpec, build_model_inputs  # noqa: E402
from monitoring.checks import CheckParams, MonitorData, run_checks  # noqa: E402
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


def prepare_window(landing: Path, work: Path, spec: InputSpec) -> tuple[pd.DataFrame, object, pd.Series]:
    """Ingest and clean a landing batch; its features, model inputs and human labels."""
    from features.clean import CleanParams

    raw = ingest_batch(landing, work / "raw")
    cleaned = clean_batch(raw.batch_dir, work / "clean", CleanParams())
    rows = cleaned.rows
    features = compute_sample_features(cleaned.batch_dir, rows, raw.batch_id)
    labels = rows.set_index("sample_id")["label"].dropna().astype(float)
    return features, build_model_inputs(cleaned.batch_dir, rows, spec), labels


def train_small_model(inputs, labels: pd.Series, epochs: int = 8):
    """A small ImageBind trained on the reference window (image <-> caption, audio -> image)."""
    from models.imagebind import ImageBindConfig
    from models.text import encode_texts
    from models.train import TrainConfig, TrainingData, train_imagebind

    keep = np.flatnonzero(inputs.has_image & inputs.has_audio & inputs.has_caption)
    part = inputs.take(keep)
    label = labels.reindex(part.sample_id).fillna(-1).to_numpy(dtype=np.int64)
    data = TrainingData(image=part.image, audio=part.audio, text_emb=encode_texts(list(part.caption)), label=label)
    config = ImageBindConfig(embed_dim=32, image_size=16, audio_n_mels=40, audio_frames=100)
    return train_imagebind(data, config, TrainConfig(epochs_stage1=epochs, epochs_stage2=epochs)).model


def detect(reference: MonitorData, current: MonitorData, params: CheckParams) -> dict:
    result = run_checks(reference, current, list(NUMERIC_FEATURES), list(CATEGORICAL_FEATURES), params)
    scores = {f"{name}:{item}": round(float(entry.get("score", entry.get("out_of_range_share", entry.get("drop", 0.0)) or 0.0)), 4)
              for name, check in result.checks.items() for item, entry in check["items"].items()}
    return {"alarm": result.drift_detected, "findings": result.findings, "scores": scores}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=300, help="rows per current batch")
    parser.add_argument("--reference-samples", type=int, default=600)
    parser.add_argument("--clean-seeds", type=int, default=20)
    parser.add_argument("--kinds", nargs="*", default=list(DRIFT_KINDS))
    parser.add_argument("--params", type=Path, default=PROJECT / "params.yaml")
    args = parser.parse_args()
    from models.evaluate import DIGIT_PROMPTS
    from models.text import encode_texts

    started = time.perf_counter()
    params, spec = check_params_from(args.params), InputSpec()
    out: dict = {"samples": args.samples, "reference_samples": args.reference_samples, "kinds": {}, "clean": {}}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        generate_demo_batch(root / "landing-ref", samples=args.reference_samples, seed=1000)
        features, inputs, labels = prepare_window(root / "landing-ref", root / "lake", spec)
        model, prompts = train_small_model(inputs, labels), encode_texts(list(DIGIT_PROMPTS))
        reference = build_monitor_data(features, inputs, model, prompts, labels)

        def judge(name: str, seed: int, drift: str | None) -> dict:
            generate_demo_batch(root / name, samples=args.samples, seed=seed, drift=drift)
            features, inputs, labels = prepare_window(root / name, root / "lake", spec)
            current = build_monitor_data(features, inputs, model, prompts, labels)
            return detect(reference, current, params)

        for k, kind in enumerate(args.kinds):
            outcome = judge(f"drift-{kind}", 2000 + k, kind)
            outcome["named_expected"] = sorted(set(outcome["findings"]) & EXPECTED[kind])
            outcome["detected"] = bool(outcome["named_expected"])
            out["kinds"][kind] = outcome
            print(kind, outcome["detected"], outcome["findings"], flush=True)
        for seed in range(3000, 3000 + args.clean_seeds):
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


if __name__ == "__main__":
    main()
