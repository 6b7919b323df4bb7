"""The validate stage as validation results accumulate in the GX context: seconds a validation takes after K earlier.

GX builds the Data Docs index at each checkpoint run from every stored validation result; flywheel lists the
latest `validate.data_docs_index_results` there (params.yaml). This runs the clean-rows suite on the same 200-row
demo-like table `--runs` times into one context, with that limit and with none (GX's default), each in its own
process pinned to one core, and reports the median seconds of the 9 validations around a few run counts.

Usage: python benchmarks/validation_history.py [--runs 300] [--out FILE]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT))
WINDOW = 9  # validations around each reported run count, for a median


def child(limit: bool, runs: int) -> list[float]:
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    from features.env import apply_process_environment

    apply_process_environment()
    from features.validate import validate_rows
    from tests.unit.params_support import validate_params
    from tests.unit.test_validate import make_clean_rows

    params = validate_params(n_classes=10, languages=("en", "de", "fr", "es"))
    if not limit:
        params = dataclasses.replace(params, data_docs_index_results=None)  # GX's default: every result listed
    rows = make_clean_rows(rows=200)
    seconds = []
    with tempfile.TemporaryDirectory() as home:
        for run in range(runs):
            started = time.perf_counter()
            validate_rows(rows, Path(home) / "gx", params, batch_id=f"b{run:05d}", run_name=f"run{run:05d}")
            seconds.append(time.perf_counter() - started)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--out", type=Path, default=PROJECT / "benchmarks" / "results" / "validation_history.json")
    parser.add_argument("--child", choices=("limited", "unlimited"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child == "limited", args.runs)))
        return
    from tests.unit.params_support import validate_params

    index_results = validate_params().data_docs_index_results
    series = {}
    for mode in ("unlimited", "limited"):
        done = subprocess.run([sys.executable, __file__, "--child", mode, "--runs", str(args.runs)],
                              capture_output=True, text=True, check=True)
        series[mode] = json.loads(done.stdout.strip().splitlines()[-1])
    points = sorted({WINDOW // 2, args.runs // 4, args.runs // 2, args.runs - 1 - WINDOW // 2})
    report = []
    for at in points:
        window = slice(max(at - WINDOW // 2, 1), at + WINDOW // 2 + 1)  # the first run opens the context: left out
        entry = {"earlier_results": at, **{mode: statistics.median(values[window]) for mode, values in series.items()}}
        entry["ratio"] = entry["unlimited"] / entry["limited"]
        report.append(entry)
        print(f"after {at:>4} validations: {entry['unlimited']:.2f} s with every result on the index, "
              f"{entry['limited']:.2f} s with the latest {index_results} (x{entry['ratio']:.2f})", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"runs": args.runs, "index_results": index_results, "report": report,
                                    "seconds": series, "load_avg": os.getloadavg()}, indent=2))
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
