"""The cost of a fully cached run as a user pays it: `flywheel run` of a batch whose every stage is
recorded, timed as a whole process (interpreter start, imports, settings, the stages' cache checks,
the summary), once with `--plain` and once under Prefect with its local server already up.

A fresh FLYWHEEL_HOME gets one demo batch, computed once by a first run; then `--repeats` cached runs
of each driver, interleaved so machine noise hits both alike. Each cached run must reuse every stage
(its summary says so) and register no new version, or the benchmark fails. The baseline, measured
in the same run, is the bare process start of the CLI (`python -c "import flows.cli"`), so the ratio
tells what the run adds to starting Python at all. The machine's load is recorded before and after.

Targets (issue 17): plain <= 3 s, Prefect <= 5 s, on a 600-row batch.
Usage: python benchmarks/cached_run.py [--samples 600] [--repeats 5] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TARGETS_S = {"plain": 3.0, "prefect": 5.0}


def timed(command: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(command, cwd=PROJECT, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return seconds


def newest_summary(home: Path) -> dict:
    return json.loads(max((home / "runs").glob("*/summary.json"), key=lambda p: p.stat().st_mtime_ns).read_text())


def check_cached(home: Path, driver: str, version: str | None) -> None:
    summary = newest_summary(home)
    recomputed = [stage for stage, entry in summary["cache"].items() if not entry.get("cached")]
    if recomputed or summary["model"].get("version") != version:
        raise RuntimeError(f"the cached {driver} run recomputed {recomputed} or registered "
                           f"{summary['model'].get('version')} (first run: {version})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=600)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--params", type=Path, default=PROJECT / "params.yaml")
    parser.add_argument("--out", type=Path, default=PROJECT / "benchmarks" / "results" / "cached_run.json")
    args = parser.parse_args()

    sys.path.insert(0, str(PROJECT))
    from examples.digits.demo import generate_demo_batch

    work = Path(tempfile.mkdtemp(prefix="flywheel-cached-"))
    home, batch = work / "home", work / "batch"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLYWHEEL_", "PREFECT_", "MLFLOW_TRACKING"))}
    env |= {"PYTHONPATH": str(PROJECT), "COLUMNS": "200"}
    flywheel = [str(BIN / "flywheel")]
    common = ["--home", str(home), "--params", str(args.params)]
    load_before = os.getloadavg()
    times: dict[str, list[float]] = {"baseline": [], "plain": [], "prefect": []}
    try:
        generate_demo_batch(batch, samples=args.samples, seed=7)
        first_s = timed([*flywheel, "run", "--plain", "--source", str(batch), *common], env)
        version = newest_summary(home)["model"].get("version")
        print(f"first run (computes every stage) {first_s:.1f} s", flush=True)
        timed([*flywheel, "server", "start", *common], env)
        timed([*flywheel, "run", "--source", str(batch), *common], env)  # the server's first flow run: warm-up
        for repeat in range(args.repeats):
            times["baseline"].append(timed([sys.executable, "-c", "import flows.cli"], env))
            times["plain"].append(timed([*flywheel, "run", "--plain", "--source", str(batch), *common], env))
            check_cached(home, "plain", version)
            times["prefect"].append(timed([*flywheel, "run", "--source", str(batch), *common], env))
            check_cached(home, "prefect", version)
            print(f"repeat {repeat + 1}: " + "  ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items()), flush=True)
    finally:
        subprocess.run([*flywheel, "server", "stop", *common], cwd=PROJECT, env=env, capture_output=True)
        shutil.rmtree(work, ignore_errors=True)

    median = {k: statistics.median(v) for k, v in times.items()}
    report = {
        "samples": args.samples, "repeats": args.repeats, "first_run_s": first_s,
        "median_s": median, "min_s": {k: min(v) for k, v in times.items()}, "max_s": {k: max(v) for k, v in times.items()},
        "ratio_to_baseline": {k: median[k] / median["baseline"] for k in TARGETS_S},
        "targets_s": TARGETS_S, "met": {k: median[k] <= TARGETS_S[k] for k in TARGETS_S},
        "machine": {"cpus": os.cpu_count(), "load_before": load_before, "load_after": os.getloadavg()},
        "times_s": times,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"\ncached run of a {args.samples}-row batch, as a process, median of {args.repeats}:")
    for k in TARGETS_S:
        print(f"  {k:8s} {median[k]:5.2f} s  (x{report['ratio_to_baseline'][k]:.1f} the bare CLI start, "
              f"{median['baseline']:.2f} s; target <= {TARGETS_S[k]:.0f} s: {'met' if report['met'][k] else 'MISSED'})")
    print(f"  load average before {load_before[0]:.2f}, after {report['machine']['load_after'][0]:.2f}")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
