"""Re-run cost: the lifecycle on a batch, then the same run again, whose stages are all recorded.

In one process with the libraries imported first (so neither run pays for imports): a fresh
FLYWHEEL_HOME, `run_stages` on a demo batch (the first run computes every stage), then
`run_stages` on the same batch again (every stage is re-loaded from its record, nothing is
recomputed: flows/stage_cache.py). Repeats use a fresh home each, interleaving first runs and
re-runs, so machine noise hits both alike.

Reported: wall time of each, the ratio re-run / first run, the stages the re-run reused, and
per stage the seconds of both runs.
Usage: python benchmarks/rerun_cache.py [--samples 300] [--repeats 2] [--params params.yaml] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]


def timed_run(settings, batch: Path) -> tuple[float, dict]:
    from flows.loop import reaction
    from flows.pipeline import run_stages

    started = time.perf_counter()
    record = run_stages(settings, batch, react=reaction(signal=None))
    return time.perf_counter() - started, {"seconds": record.seconds, "cached": {s: e["cached"] for s, e in record.cache.items()},
                                            "model_version": record.model.get("version")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--params", type=Path, default=PROJECT / "params.yaml")
    parser.add_argument("--out", type=Path, default=PROJECT / "benchmarks" / "results" / "rerun_cache.json")
    args = parser.parse_args()

    sys.path.insert(0, str(PROJECT))
    from features.env import apply_process_environment

    apply_process_environment()
    from examples.digits.demo import generate_demo_batch
    from flows.prefect_runtime import preload_libraries
    from flows.settings import load_settings

    preload_libraries(with_prefect=False)
    work = Path(tempfile.mkdtemp(prefix="flywheel-bench-"))
    runs: list[dict] = []
    try:
        batch = work / "batch"
        generate_demo_batch(batch, samples=args.samples, seed=7)
        for repeat in range(args.repeats):
            settings = load_settings(work / f"home-{repeat}", args.params)
            first_s, first = timed_run(settings, batch)
            rerun_s, rerun = timed_run(settings, batch)
            if not all(rerun["cached"].values()) or rerun["model_version"] != first["model_version"]:
                raise RuntimeError(f"the re-run recomputed stages or registered a new version: {rerun}")
            runs.append({"first_s": first_s, "rerun_s": rerun_s, "first": first, "rerun": rerun})
            print(f"repeat {repeat + 1}: first run {first_s:6.1f} s, re-run {rerun_s:5.2f} s "
                  f"(ratio {rerun_s / first_s:.3f})", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    first_s = statistics.median(r["first_s"] for r in runs)
    rerun_s = statistics.median(r["rerun_s"] for r in runs)
    stages = list(runs[0]["first"]["seconds"])
    report = {
        "samples": args.samples,
        "repeats": args.repeats,
        "params": str(args.params),
        "median_first_run_s": first_s,
        "median_rerun_s": rerun_s,
        "ratio_rerun_to_first": rerun_s / first_s,
        "rerun_reused_stages": [s for s, hit in runs[0]["rerun"]["cached"].items() if hit],
        "median_stage_s": {s: {"first": statistics.median(r["first"]["seconds"][s] for r in runs),
                               "rerun": statistics.median(r["rerun"]["seconds"][s] for r in runs)} for s in stages},
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"\nlifecycle on {args.samples} samples, {args.repeats} repeat(s), in one process, libraries imported first:")
    print(f"  first run {first_s:6.1f} s   re-run {rerun_s:5.2f} s   ratio {rerun_s / first_s:.3f}")
    print(f"  {'stage':10s} {'first':>7s} {'re-run':>7s}")
    for stage, s in report["median_stage_s"].items():
        print(f"  {stage:10s} {s['first']:6.2f}s {s['rerun']:6.2f}s")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
