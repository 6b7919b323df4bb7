"""Drift checks at scale: the fast exact path (`monitoring.fast_drift`) against Evidently's default
DataDriftPreset, per-column decisions and wall time, in the same process.

20 features (14 continuous, 2 discrete numeric with <= 5 values, 4 categorical), several synthetic
drift patterns, some placed near the 0.1 thresholds on purpose. The preset runs on the full 1 M rows
for one pattern (about 90 s) and on 100 k rows for every pattern; the fast path on both sizes.
Writes benchmarks/results/drift_scale.json.

    .venv/bin/python benchmarks/drift_scale.py [--rows 1000000] [--preset-rows 100000]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("DO_NOT_TRACK", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from flows.settings import MonitorParams  # noqa: E402
from monitoring.drift import DriftParams, compute_drift  # noqa: E402
from monitoring.fast_drift import compute_column_drift_fast  # noqa: E402

CONTINUOUS = [f"num_{i:02d}" for i in range(14)]
DISCRETE = ["disc_0", "disc_1"]
CATEGORICAL = ["cat_0", "cat_1", "cat_2", "cat_3"]
NUMERICAL = CONTINUOUS + DISCRETE
RESULTS = Path(__file__).parent / "results" / "drift_scale.json"

# pattern -> what moves in the current frame (shifts in reference stds; near 0.1 on purpose for some)
PATTERNS: dict[str, dict] = {
    "none": {},
    "mean_shifts": {"shift": {"num_00": 0.05, "num_01": 0.09, "num_02": 0.11, "num_03": 0.2, "num_04": 1.0}},
    "scale_and_tails": {"scale": {"num_05": 1.15, "num_06": 1.3}, "tail": {"num_07": 0.05}},
    "categorical": {"cat_probs": {"cat_0": [0.4, 0.3, 0.2, 0.1], "cat_1": [0.1, 0.2, 0.3, 0.4]},
                    "disc_probs": {"disc_0": [0.3, 0.3, 0.4]}},
    "mixed": {"shift": {"num_08": 0.08, "num_09": 0.12, "num_10": 0.5}, "scale": {"num_11": 1.2},
              "cat_probs": {"cat_2": [0.25, 0.25, 0.25, 0.25]}, "disc_probs": {"disc_1": [0.5, 0.2, 0.2, 0.05, 0.05]}},
}
BASE_CAT = [0.35, 0.3, 0.2, 0.15]
BASE_DISC = {"disc_0": [0.34, 0.33, 0.33], "disc_1": [0.4, 0.2, 0.2, 0.1, 0.1]}


def make_frame(rows: int, seed: int, pattern: dict) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    data: dict[str, np.ndarray] = {}
    for i, column in enumerate(CONTINUOUS):
        # Different shapes: normal, lognormal, uniform, so the normed distance sees real tails.
        kind = i % 3
        values = (rng.normal(0, 1, rows) if kind == 0 else rng.lognormal(0, 0.5, rows) if kind == 1
                  else rng.uniform(0, 1, rows))
        std = float(np.std(values))
        values = values * pattern.get("scale", {}).get(column, 1.0) + pattern.get("shift", {}).get(column, 0.0) * std
        if column in pattern.get("tail", {}):
            outliers = rng.random(rows) < pattern["tail"][column]
            values[outliers] += 5 * std
        data[column] = values.astype(np.float32)
    for column in DISCRETE:
        probs = pattern.get("disc_probs", {}).get(column, BASE_DISC[column])
        data[column] = rng.choice(len(probs), rows, p=probs).astype(np.float32)
    for column in CATEGORICAL:
        probs = pattern.get("cat_probs", {}).get(column, BASE_CAT)
        data[column] = np.array(["a", "b", "c", "d"])[rng.choice(4, rows, p=probs)]
    frame = pd.DataFrame(data)
    for column in CATEGORICAL:
        frame[column] = frame[column].astype("category")
    return frame


def verdicts(per_column: dict) -> dict[str, bool]:
    return {column: bool(entry["drifted"]) for column, entry in per_column.items()}


def run_fast(reference: pd.DataFrame, current: pd.DataFrame) -> tuple[dict, float]:
    started = time.perf_counter()
    per_column = compute_column_drift_fast(reference, current, NUMERICAL, CATEGORICAL)
    return per_column, time.perf_counter() - started


def run_preset(reference: pd.DataFrame, current: pd.DataFrame) -> tuple[dict, float]:
    started = time.perf_counter()
    m = MonitorParams()  # Evidently alone: its own per-method thresholds, no fast path, no noise floor
    params = DriftParams(drift_share=m.drift_share, column_threshold=None, fast_path_rows=None,
                         report_rows=m.report_rows, noise_sigmas=None)
    result = compute_drift(reference, current, NUMERICAL, CATEGORICAL, params)
    return result.per_column, time.perf_counter() - started


def compare(fast: dict, preset: dict) -> dict:
    disagree = [c for c in fast if fast[c]["drifted"] != preset[c]["drifted"]]
    return {"columns": len(fast), "agree": len(fast) - len(disagree), "disagree": disagree,
            "max_score_gap": max(abs(fast[c]["score"] - preset[c]["score"]) for c in fast),
            "methods_match": all(fast[c]["method"] == preset[c]["method"] for c in fast),
            "drifted": sorted(c for c in fast if fast[c]["drifted"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--preset-rows", type=int, default=100_000)
    parser.add_argument("--full-preset-pattern", default="mixed", help="pattern also run through the preset at --rows ('' skips)")
    args = parser.parse_args()
    out: dict = {"rows": args.rows, "preset_rows": args.preset_rows, "features": len(NUMERICAL) + len(CATEGORICAL),
                 "machine": {"cpus": os.cpu_count(), "load_1m": os.getloadavg()[0], "python": platform.python_version()},
                 "patterns": {}}
    for p, (name, pattern) in enumerate(PATTERNS.items()):
        entry: dict = {}
        for rows, with_preset in ((args.preset_rows, True), (args.rows, name == args.full_preset_pattern)):
            reference, current = make_frame(rows, 2 * p, {}), make_frame(rows, 2 * p + 1, pattern)
            fast, fast_s = run_fast(reference, current)
            size = {"fast_seconds": round(fast_s, 3)}
            if with_preset:
                preset, preset_s = run_preset(reference, current)
                size.update(preset_seconds=round(preset_s, 3), speedup=round(preset_s / fast_s, 1), **compare(fast, preset))
            else:
                size["drifted"] = sorted(c for c in fast if fast[c]["drifted"])
            entry[str(rows)] = size
            print(name, rows, size, flush=True)
        out["patterns"][name] = entry
    full = [e[str(args.rows)] for e in out["patterns"].values()]
    out["fast_seconds_max_at_rows"] = max(e["fast_seconds"] for e in full)
    out["all_decisions_agree"] = all(not s.get("disagree") for e in out["patterns"].values() for s in e.values())
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps({k: v for k, v in out.items() if k != "patterns"}, indent=2))


if __name__ == "__main__":
    main()
