"""Data-step throughput on a Dask cluster: clean with 1 and with 2 worker processes.

The clean stage runs as the lifecycle runs it on a cluster: `flows.lifecycle.run_clean_subflow`
with FLYWHEEL_DASK_ADDRESS set (`Settings.dask_address`), so its chunks of rows are Prefect
tasks on the Prefect Dask task runner. Both clusters are `distributed.LocalCluster`s with
`threads_per_worker=1` (one decoding thread per process: the worker count is the only
difference), started before the first timed run and warmed by one untimed clean each, then
timed alternately on the same ingested batch (from `data_scaling.build_scaled_batch`), so
machine noise hits both alike. Prefect runs on its ephemeral API, started by a warm-up flow,
with the end-of-flow heartbeat off as `flywheel run` has it.

Throughput = rows / median wall time; ratio = 2-worker throughput / 1-worker throughput (also
per repeat, from the two runs taken back to back, since other work on the machine drifts).
On a machine with N free cores the ceiling is min(2, N); the serial parts of clean (planning
chunks, near-duplicate search, joining the chunk tables) bound it below that.

Usage: python benchmarks/dask_scaling.py [--rows 3000] [--repeats 3] [--out FILE]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
WORKER_COUNTS = (1, 2)
BASE_SAMPLES = 400  # real demo samples the scaled batch is perturbed from (as in data_scaling.py)


def time_clean(settings, raw_dir: Path, home: Path) -> tuple[float, int]:
    """One clean of the batch through the lifecycle's subflow into a fresh home; seconds and rows kept."""
    from flows.lifecycle import run_clean_subflow

    settings = dataclasses.replace(settings, paths=dataclasses.replace(settings.paths, home=home))
    started = time.perf_counter()
    result = run_clean_subflow(settings, raw_dir)
    seconds = time.perf_counter() - started
    shutil.rmtree(home, ignore_errors=True)
    return seconds, len(result.rows)


def measure(work: Path, rows: int, repeats: int) -> dict:
    """Build and ingest the batch, then time clean on each cluster, alternating, after a warm-up each."""
    from distributed import LocalCluster
    from prefect import flow
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    from benchmarks.data_scaling import build_scaled_batch
    from examples.digits.demo import generate_demo_batch
    from features.ingest import ingest_batch
    from flows.settings import load_settings

    load_at_start = os.getloadavg()[0]
    started = time.perf_counter()
    generate_demo_batch(work / "base", samples=BASE_SAMPLES, seed=3, fault_rate=0.0)
    build_scaled_batch(work / "base", work / "landing" / "batch-dask", rows)
    settings = load_settings(work / "home", PROJECT / "params.yaml")
    raw = ingest_batch(work / "landing" / "batch-dask", settings.paths.lake_raw)
    print(f"{raw.report.rows_in} rows generated and ingested in {time.perf_counter() - started:.0f} s", flush=True)

    os.environ["PREFECT_HOME"] = str(work / "prefect")
    seconds: dict[int, list[float]] = {n: [] for n in WORKER_COUNTS}
    kept: set[int] = set()
    clusters = {n: LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=":0")
                for n in WORKER_COUNTS}
    try:
        with temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
            flow(name="warm-up")(lambda: None)()  # starts the ephemeral API outside the timings
            on = {n: dataclasses.replace(settings, dask_address=c.scheduler_address) for n, c in clusters.items()}
            for n in WORKER_COUNTS:  # warm: worker imports, Prefect's task registration, file caches
                warm_s, _ = time_clean(on[n], raw.batch_dir, work / f"home-warm-{n}")
                print(f"{n} worker(s): warm-up clean {warm_s:.1f} s", flush=True)
            for repeat in range(repeats):
                for n in WORKER_COUNTS:
                    wall, rows_kept = time_clean(on[n], raw.batch_dir, work / f"home-{n}-{repeat}")
                    seconds[n].append(wall)
                    kept.add(rows_kept)
                    print(f"{n} worker(s), run {repeat + 1}: {wall:.2f} s, {raw.report.rows_in / wall:,.0f} rows/s",
                          flush=True)
    finally:
        for cluster in clusters.values():
            cluster.close()
    if len(kept) != 1:
        raise RuntimeError(f"clean kept different row counts across runs: {sorted(kept)}")
    per_workers = {str(n): {"seconds": seconds[n], "median_s": statistics.median(seconds[n]),
                            "rows_per_s": raw.report.rows_in / statistics.median(seconds[n])}
                   for n in WORKER_COUNTS}
    return {
        "rows": raw.report.rows_in,
        "rows_kept": kept.pop(),
        "repeats": repeats,
        "threads_per_worker": 1,
        "workers": per_workers,
        "ratio_2_over_1": per_workers["2"]["rows_per_s"] / per_workers["1"]["rows_per_s"],
        # Each repeat's 1-worker time over its 2-worker time, taken back to back: robust to load that drifts.
        "pair_ratios": [one / two for one, two in zip(seconds[1], seconds[2])],
        "machine": {"cpus": os.cpu_count(), "load_avg_1m_at_start": load_at_start, "load_avg_1m_at_end": os.getloadavg()[0],
                    "python": platform.python_version()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=3000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=PROJECT / "benchmarks" / "results" / "dask_scaling.json")
    args = parser.parse_args()

    sys.path.insert(0, str(PROJECT))
    from features.env import apply_process_environment

    apply_process_environment()
    work = Path(tempfile.mkdtemp(prefix="flywheel-dask-"))
    try:
        result = measure(work, args.rows, args.repeats)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    one, two = result["workers"]["1"], result["workers"]["2"]
    print(f"clean on Dask, {result['rows']} rows: 1 worker {one['rows_per_s']:,.0f} rows/s, "
          f"2 workers {two['rows_per_s']:,.0f} rows/s, ratio ×{result['ratio_2_over_1']:.2f} "
          f"(per repeat {', '.join(f'×{r:.2f}' for r in result['pair_ratios'])}) "
          f"({result['machine']['cpus']} cpus, load {result['machine']['load_avg_1m_at_end']:.1f})")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
