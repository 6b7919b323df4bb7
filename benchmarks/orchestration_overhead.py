"""Orchestration overhead: the lifecycle as a Prefect flow against the same stage functions in a plain loop.

Each mode runs the whole `flywheel run` process on the same landing batch with a fresh
FLYWHEEL_HOME, interleaved over repeats so machine noise hits every mode alike:

  plain      `flywheel run --plain`       stage functions called directly, no Prefect
  ephemeral  `flywheel run --ephemeral`   Prefect flow + tasks, Prefect's per-process ephemeral API
  cold       `flywheel run`               no server yet: flywheel spawns its local server (kept for later runs)
  warm       `flywheel run`               the local server is already up (`flywheel server start`)

Overhead = median wall(mode) - median wall(plain); also reported as a share of the plain lifecycle.
Usage: python benchmarks/orchestration_overhead.py [--samples 300] [--repeats 2] [--out FILE]
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
FLYWHEEL = str(Path(sys.executable).with_name("flywheel"))
MODES = ("plain", "ephemeral", "cold", "warm")
FLAGS = {"plain": ["--plain"], "ephemeral": ["--ephemeral"], "cold": [], "warm": []}


def run_once(mode: str, batch: Path, home: Path, env: dict[str, str]) -> dict[str, float]:
    """Wall time of one whole `flywheel run` process, plus the stage seconds it recorded."""
    if home.exists():
        shutil.rmtree(home)
    args = [FLYWHEEL, "run", "--source", str(batch), "--home", str(home), *FLAGS[mode]]
    run_env = dict(env)
    if mode == "warm":
        run_env["PREFECT_API_URL"] = env["_SERVER_URL"]
    run_env.pop("_SERVER_URL", None)
    cold_server = home.with_name(f"{home.name}-prefect-server")  # not the machine's shared server: a cold start
    if mode == "cold":
        run_env["FLYWHEEL_PREFECT_SERVER_HOME"] = str(cold_server)
    started = time.perf_counter()
    done = subprocess.run(args, env=run_env, cwd=PROJECT, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if mode == "cold":  # the run left its server up for later runs; stop it, untimed
        from flows.prefect_server import stop_server

        stop_server(cold_server)
    if done.returncode != 0:
        raise RuntimeError(f"{mode} run failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    [summary] = list((home / "runs").glob("*/summary.json"))
    stages = json.loads(summary.read_text())["seconds"]
    return {"wall": wall, "stages": sum(stages.values())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, default=PROJECT / "benchmarks" / "results" / "orchestration_overhead.json")
    args = parser.parse_args()

    sys.path.insert(0, str(PROJECT))
    from features.env import apply_process_environment
    from flows.prefect_server import start_server, stop_server

    apply_process_environment()
    env = dict(os.environ)
    env.pop("PREFECT_API_URL", None)
    work = Path(tempfile.mkdtemp(prefix="flywheel-bench-"))
    try:
        batch = work / "batch"
        subprocess.run([FLYWHEEL, "demo-data", "--out", str(batch), "--samples", str(args.samples), "--seed", "7"],
                       check=True, cwd=PROJECT, env=env, capture_output=True)
        server_home = work / "server-prefect"
        t0 = time.perf_counter()
        env["_SERVER_URL"] = start_server(server_home, port=4290)
        server_start_s = time.perf_counter() - t0
        results: dict[str, list[dict[str, float]]] = {m: [] for m in MODES}
        for repeat in range(args.repeats):
            for mode in MODES:
                results[mode].append(run_once(mode, batch, work / f"home-{mode}", env))
                print(f"repeat {repeat + 1} {mode:9s} wall {results[mode][-1]['wall']:6.1f} s", flush=True)
        stop_server(server_home)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    wall = {m: statistics.median(r["wall"] for r in results[m]) for m in MODES}
    # The least-disturbed run of each mode: on a shared machine noise only ever adds time.
    best = {m: min(r["wall"] for r in results[m]) for m in MODES}
    stages = {m: statistics.median(r["stages"] for r in results[m]) for m in MODES}
    report = {
        "samples": args.samples,
        "repeats": args.repeats,
        "median_wall_s": wall,
        "min_wall_s": best,
        "min_overhead_s": {m: best[m] - best["plain"] for m in MODES if m != "plain"},
        "median_stage_sum_s": stages,
        "overhead_s": {m: wall[m] - wall["plain"] for m in MODES if m != "plain"},
        "overhead_share_of_lifecycle": {m: (wall[m] - wall["plain"]) / wall["plain"] for m in MODES if m != "plain"},
        "ratio_to_plain": {m: wall[m] / wall["plain"] for m in MODES},
        "server_start_s": server_start_s,
        "runs": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"\nlifecycle on {args.samples} samples, {args.repeats} interleaved repeats (whole process, fresh state):")
    print(f"  {'mode':9s} {'median':>7s} {'ratio':>6s} {'overhead':>9s} {'share':>6s} {'min':>7s} {'min overhead':>13s}")
    for mode in MODES:
        over = wall[mode] - wall["plain"]
        print(f"  {mode:9s} {wall[mode]:6.1f}s {wall[mode] / wall['plain']:6.2f} {over:+8.1f}s {100 * over / wall['plain']:5.0f}%"
              f" {best[mode]:6.1f}s {best[mode] - best['plain']:+12.1f}s")
    print(f"  (one-off local server start: {server_start_s:.1f} s)\nwritten to {args.out}")


if __name__ == "__main__":
    main()
