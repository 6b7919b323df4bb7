"""A task no one here has seen, end to end as a user runs it: `flywheel init`, their own batches, only
`params.yaml` edited, two `flywheel run`s, then serving.

The task: three shape classes named by strings ("circle", "square", "triangle"), RGB drawings in four
colours, the shape's name spoken by espeak-ng voice variants the digits example never uses, and English
captions. The golden batch is the user's own (every row labelled); a third of the training rows carry a
human label. Reported: the champion's golden-set accuracies against chance (1/3), the second model's gate
decision, the monitor's verdict and what `/classify` answers for a new drawing.

Usage: python benchmarks/unseen_task.py [--samples 240] [--golden 60] [--out FILE]
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import soundfile as sf
import yaml

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT))

from tests.flows.shapes_task import COLOURS, SHAPES, WORDINGS, draw_shape  # noqa: E402

# espeak-ng voice variants: none of them is among the digits example's voices (examples/digits/demo.py).
VOICES = ("en-us+Alicia", "en-gb+Adam", "en+Andrea", "en-us+klatt2", "en-gb+m7", "en+f5")
TASK = {"classes": list(SHAPES), "prompts": "a picture of a {label}", "golden": "data/golden",
        "slices": ["voice"], "languages": None, "image_channels": 3}


def speak(word: str, voice: str, path: Path) -> None:
    subprocess.run(["espeak-ng", "-v", voice, "-w", str(path), word], check=True, capture_output=True)
    wave, rate = sf.read(path, dtype="float32")
    sf.write(path, wave, rate, subtype="PCM_16")


def write_batch(out: Path, samples: int, seed: int, label_rate: float) -> Path:
    rng = np.random.default_rng(seed)
    for sub in ("images", "audio"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    start = datetime(2026, 11, 1, tzinfo=timezone.utc) + timedelta(days=seed)
    lines = []
    for i in range(samples):
        shape, colour = SHAPES[i % 3], list(COLOURS)[int(rng.integers(len(COLOURS)))]
        voice = VOICES[int(rng.integers(len(VOICES)))]
        name = f"b{seed}-{i:04d}"
        draw_shape(shape, COLOURS[colour], rng).save(out / "images" / f"{name}.png")
        speak(shape, voice, out / "audio" / f"{name}.wav")
        row = {"sample_id": name, "captured_at": (start + timedelta(minutes=i)).isoformat(),
               "image": f"images/{name}.png", "audio": f"audio/{name}.wav", "voice": voice,
               "caption": WORDINGS[int(rng.integers(len(WORDINGS)))].format(colour=colour, shape=shape)}
        if rng.random() < label_rate:
            row["label"] = shape
        lines.append(json.dumps(row))
    (out / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    return out


def flywheel(*args: str) -> subprocess.CompletedProcess:
    exe = str(Path(sys.executable).with_name("flywheel"))
    return subprocess.run([exe, *args], check=True, capture_output=True, text=True, env={**os.environ})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=240)
    parser.add_argument("--golden", type=int, default=60)
    parser.add_argument("--out", type=Path, default=PROJECT / "benchmarks" / "results" / "unseen_task.json")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="flywheel-unseen-"))
    project = work / "shapes"
    try:
        flywheel("init", str(project))
        params_path = project / "params.yaml"
        params = yaml.safe_load(params_path.read_text())
        params["task"] = TASK  # the only file the user edits
        params_path.write_text(yaml.safe_dump(params, sort_keys=False))
        write_batch(project / "data" / "golden", args.golden, seed=900, label_rate=1.0)
        seconds = {}
        for k in (1, 2):
            batch = write_batch(project / "data" / "landing" / f"batch-{k}", args.samples, seed=k, label_rate=1 / 3)
            started = time.perf_counter()
            flywheel("run", "--params", str(params_path), "--home", str(project / ".flywheel"), "--source", str(batch))
            seconds[f"run_{k}"] = round(time.perf_counter() - started, 1)
        runs = sorted((project / ".flywheel" / "runs").iterdir(), key=lambda p: p.stat().st_mtime)
        first, second = (json.loads((r / "summary.json").read_text()) for r in runs[-2:])
        report = {
            "chance": round(1 / 3, 3),
            "champion_golden_metrics": {k: round(v, 3) for k, v in first["train"]["metrics"].items()},
            "second_golden_metrics": {k: round(v, 3) for k, v in second["train"]["metrics"].items()},
            "second_gate_passed": second["gate"]["passed"], "second_gate_reason": second["gate"]["reason"],
            "champion_after": second["model"].get("champion"),
            "monitor": second["monitor"]["status"], "seconds": seconds,
            "classify": classify_new_drawing(params_path, project / ".flywheel"),
        }
        print(json.dumps(report, indent=2))
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def classify_new_drawing(params: Path, home: Path) -> dict:
    from fastapi.testclient import TestClient

    from features.env import apply_process_environment

    apply_process_environment()
    from flows.serving import build_app
    from flows.settings import load_settings

    buffer = io.BytesIO()
    draw_shape("triangle", COLOURS["green"], np.random.default_rng(77)).save(buffer, format="PNG")
    with TestClient(build_app(load_settings(home, params))) as client:
        body = client.post("/classify", json={"modality": "image",
                                              "data_base64": base64.b64encode(buffer.getvalue()).decode()}).json()
    return {"asked": "a green triangle (image)", "label": body.get("label"), "prompt": body.get("prompt"),
            "confidence": body.get("confidence")}


if __name__ == "__main__":
    main()
