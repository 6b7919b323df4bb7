"""Data-stage throughput on a Dask cluster: ingest through model inputs with 1 and with 2 worker processes.

The stages run as the lifecycle runs them on a cluster, with FLYWHEEL_DASK_ADDRESS set
(`Settings.dask_address`): ingest's chunks of manifest lines as Dask tasks
(`flows.lifecycle.ingest_on_cluster`), clean's chunks of raw rows as Dask tasks too, inside one Prefect task
(`run_clean_stage`); validate, the transform's features and the model inputs, table-level
steps of about a second at 100k rows, in the flow's process, as `flows.data_stages` calls them. Both clusters are
`distributed.LocalCluster`s with `threads_per_worker=1` (one thread per process: the worker count is the
only difference), started before the first timed run and warmed by one untimed run each, then timed
alternately on the same landing batch (from `data_scaling.build_scaled_batch`), each run into a fresh
home (all removed at the end), so machine noise hits both alike. Prefect runs on its ephemeral API, started by a warm-up flow,
with the end-of-flow heartbeat off as `flywheel run` has it.

Throughput = rows / median wall time of the data stages; ratio = 2-worker throughput / 1-worker
throughput (also per repeat, from the two runs taken back to back, since other work on the machine
drifts), for the stages together (issue 17's target: >= 1.7) and for ingest and clean alone.
On a machine with N free cores the ceiling is min(2, N); the serial parts (planning chunks,
near-duplicate search, joining the chunk tables, the table-level stages) bound it below that.

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
TARGET_RATIO = 1.7
STAGES = ("ingest", "clean", "validate", "transform", "model_inputs")


def time_data_stages(settings, landing: Path, home: Path) -> tuple[dict[str, float], int]:
    """Ingest through model inputs of the landing batch into a fresh home; seconds per stage and rows kept."""
    from features.transform import compute_sample_features
    from features.validate import validate_rows
    from flows.lifecycle import ingest_on_cluster, run_clean_stage
    from flows.stage_config import input_spec, validate_params
    from models.inputs import save_model_input_shards

    settings = dataclasses.replace(settings, paths=dataclasses.replace(settings.paths, home=home))
    seconds: dict[str, float] = {}

    def timed(name, fn, *args):
        started = time.perf_counter()
        result = fn(*args)
        seconds[name] = time.perf_counter() - started
        return result

    raw = timed("ingest", ingest_on_cluster, settings, landing)
    cleaned = timed("clean", run_clean_stage, settings, raw.batch_dir)
    outcome = timed("validate", validate_rows, cleaned.rows, home / "gx", validate_params(settings), raw.batch_id)
    rows = cleaned.rows[~cleaned.rows["sample_id"].isin(outcome.failed)].reset_index(drop=True)
    timed("transform", compute_sample_features, cleaned.batch_dir, rows, raw.batch_id)
    timed("model_inputs", save_model_input_shards, home / "inputs", cleaned.batch_dir, rows, input_spec(settings))
    # The home is left for the end of the benchmark: removing tens of thousands of files here would slow the
    # next run's file creation while the kernel catches up (a disk mounted with `discard`, as here)
    return seconds, len(rows)


def measure(work: Path, rows: int, repeats: int) -> dict:
    """Build the landing batch, then time the data stages on each cluster, alternating, after a warm-up each."""
    from distributed import LocalCluster
    from prefect import flow
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    from benchmarks.data_scaling import build_scaled_batch
    from examples.digits.demo import generate_demo_batch
    from flows.settings import load_settings

    load_at_start = os.getloadavg()[0]
    started = time.perf_counter()
    generate_demo_batch(work / "base", samples=BASE_SAMPLES, seed=3, fault_rate=0.0)
    landing = work / "landing" / "batch-dask"
    build_scaled_batch(work / "base", landing, rows)
    settings = load_settings(work / "home", PROJECT / "params.yaml")
    print(f"{rows} rows generated in {time.perf_counter() - started:.0f} s", flush=True)

    os.environ["PREFECT_HOME"] = str(work / "prefect")
    seconds: dict[int, list[dict[str, float]]] = {n: [] for n in WORKER_COUNTS}
    kept: set[int] = set()
    clusters = {n: LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=":0")
                for n in WORKER_COUNTS}
    try:
        with temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
            flow(name="warm-up")(lambda: None)()  # starts the ephemeral API outside the timings
            on = {n: dataclasses.replace(settings, dask_address=c.scheduler_address) for n, c in clusters.items()}
            for n in WORKER_COUNTS:  # warm: worker imports, Prefect's task registration, file caches
                warm, _ = time_data_stages(on[n], landing, work / f"home-warm-{n}")
                print(f"{n} worker(s): warm-up {sum(warm.values()):.1f} s", flush=True)
            for repeat in range(repeats):
                for n in WORKER_COUNTS:
                    stage_s, rows_kept = time_data_stages(on[n], landing, work / f"home-{n}-{repeat}")
                    seconds[n].append(stage_s)
                    kept.add(rows_kept)
                    total = sum(stage_s.values())
                    print(f"{n} worker(s), run {repeat + 1}: {total:.2f} s, {rows / total:,.0f} rows/s ("
                          + ", ".join(f"{k} {v:.1f} s" for k, v in stage_s.items()) + ")", flush=True)
    finally:
        for cluster in clusters.values():
            cluster.close()
    if len(kept) != 1:
        raise RuntimeError(f"the data stages kept different row counts across runs: {sorted(kept)}")

    def totals(n: int, names: tuple[str, ...]) -> list[float]:
        return [sum(run[name] for name in names) for run in seconds[n]]

    def ratios(names: tuple[str, ...]) -> dict:
        one, two = totals(1, names), totals(2, names)
        return {"ratio_2_over_1": statistics.median(one) / statistics.median(two),
                # Each repeat's 1-worker time over its 2-worker time, taken back to back: robust to load that drifts.
                "pair_ratios": [a / b for a, b in zip(one, two)]}

    per_workers = {str(n): {"stage_seconds": seconds[n], "median_s": statistics.median(totals(n, STAGES)),
                            "rows_per_s": rows / statistics.median(totals(n, STAGES))} for n in WORKER_COUNTS}
    stages = ratios(STAGES)
    return {
        "rows": rows,
        "rows_kept": kept.pop(),
        "repeats": repeats,
        "threads_per_worker": 1,
        "workers": per_workers,
        "ratio_2_over_1": stages["ratio_2_over_1"],
        "pair_ratios": stages["pair_ratios"],
        "target_ratio": TARGET_RATIO,
        "met": stages["ratio_2_over_1"] >= TARGET_RATIO,
        "per_stage": {"ingest": ratios(("ingest",)), "clean": ratios(("clean",))},
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
    print(f"data stages on Dask, {result['rows']} rows: 1 worker {one['rows_per_s']:,.0f} rows/s, "
          f"2 workers {two['rows_per_s']:,.0f} rows/s, ratio ×{result['ratio_2_over_1']:.2f} "
          f"(per repeat {', '.join(f'×{r:.2f}' for r in result['pair_ratios'])}; target ≥ {TARGET_RATIO}, "
          f"met: {result['met']}); "
          + ", ".join(f"{name} ×{r['ratio_2_over_1']:.2f}" for name, r in result["per_stage"].items())
          + f" ({result['machine']['cpus']} cpus, load {result['machine']['load_avg_1m_at_end']:.1f})")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
