"""Data steps at growing batch sizes: samples per second per stage and peak memory.

Batches are scaled from the demo source: a base batch of real demo samples (espeak-ng
speech, scikit-learn digits) is expanded by perturbing each copy (image shift and pixel
noise, audio gain and noise) so every row is distinct content, not a duplicate.
Each size runs in its own process so its peak RSS is its own.

Usage: python benchmarks/data_scaling.py [--sizes 1000 10000 100000] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

PROJECT = Path(__file__).resolve().parents[1]
BASE_SAMPLES = 400


def build_scaled_batch(base: Path, out: Path, rows: int, seed: int = 0) -> None:
    """`rows` distinct samples from the base batch's clean rows (faulty base rows are skipped)."""
    import soundfile as sf
    from PIL import Image

    rng = np.random.default_rng(seed)
    source = [json.loads(line) for line in (base / "manifest.jsonl").read_text().splitlines()]
    usable = [r for r in source if (base / r["image"]).exists() and (base / r["audio"]).exists()]
    images, waves = {}, {}
    for r in usable:
        try:
            images[r["sample_id"]] = np.asarray(Image.open(base / r["image"]).convert("L"), dtype=np.int16)
            waves[r["sample_id"]] = sf.read(str(base / r["audio"]), dtype="float32")
        except Exception:  # the demo's deliberately corrupt files
            continue
    usable = [r for r in usable if r["sample_id"] in images and r["sample_id"] in waves]
    (out / "images").mkdir(parents=True)
    (out / "audio").mkdir()
    with (out / "manifest.jsonl").open("w") as manifest:
        for i in range(rows):
            row = dict(usable[i % len(usable)])
            sid = f"x{i:07d}"
            pixels = np.roll(images[row["sample_id"]], rng.integers(-1, 2, size=2), axis=(0, 1))
            pixels = np.clip(pixels + rng.integers(-12, 13, size=pixels.shape), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(out / "images" / f"{sid}.png")
            wave, rate = waves[row["sample_id"]]
            wave = np.clip(wave * rng.uniform(0.5, 1.0) + rng.normal(0, 0.002, wave.shape), -1, 1)
            sf.write(out / "audio" / f"{sid}.wav", wave.astype(np.float32), rate, subtype="PCM_16")
            row.update(sample_id=sid, image=f"images/{sid}.png", audio=f"audio/{sid}.wav")
            manifest.write(json.dumps(row) + "\n")


class RssSampler:
    """The process's resident memory sampled every 20 ms in a thread; `peak()` since the last `reset()`."""

    def __init__(self) -> None:
        import os
        import threading

        self._page = os.sysconf("SC_PAGE_SIZE")
        self._max = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _rss(self) -> int:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * self._page

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self._max = max(self._max, self._rss())

    def reset(self) -> None:
        self._max = self._rss()

    def peak_mb(self) -> float:
        return max(self._max, self._rss()) / 2**20


def _anon_huge_pages_mb() -> float | None:
    """The process's anonymous memory held in transparent huge pages, MB (None where the kernel does not say)."""
    try:
        with open("/proc/self/smaps_rollup") as rollup:
            for line in rollup:
                if line.startswith("AnonHugePages:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def measure(batch: Path, work: Path, prefect: bool = True) -> dict:
    """Run the data stages as plain functions; seconds and peak RSS per stage and for the process; with
    `prefect`, also clean through the lifecycle's Prefect subflow."""
    sys.path.insert(0, str(PROJECT))
    from features.env import apply_process_environment

    apply_process_environment()
    from features.clean import clean_batch
    from features.ingest import ingest_batch
    from features.transform import compute_sample_features
    from features.validate import validate_rows
    from flows.settings import load_settings
    from flows.stage_config import clean_params, input_spec, validate_params
    from models.inputs import save_model_input_shards

    settings = load_settings(work / "home", PROJECT / "params.yaml")  # the digits example's task and stage params

    seconds: dict[str, float] = {}
    stage_peak_mb: dict[str, float] = {}
    stage_start_mb: dict[str, float] = {}  # what the process holds when a stage starts: the floor its peak includes
    sampler = RssSampler()

    cpu_seconds: dict[str, float] = {}
    system_seconds: dict[str, float] = {}  # the kernel's share of cpu_seconds (file creation on a busy disk)

    def timed(name, fn, *args):
        sampler.reset()
        stage_start_mb[name] = sampler.peak_mb()
        started, cpu_started = time.perf_counter(), time.process_time()
        system_started = resource.getrusage(resource.RUSAGE_SELF).ru_stime
        result = fn(*args)
        seconds[name] = time.perf_counter() - started
        cpu_seconds[name] = time.process_time() - cpu_started  # every thread of the process: core-seconds
        system_seconds[name] = resource.getrusage(resource.RUSAGE_SELF).ru_stime - system_started
        stage_peak_mb[name] = sampler.peak_mb()
        return result

    ingested = timed("ingest", ingest_batch, batch, work / "raw")
    cleaned = timed("clean", clean_batch, ingested.batch_dir, work / "clean", clean_params(settings))
    clean_dir, rows = cleaned.batch_dir, cleaned.rows
    del cleaned
    outcome = timed("validate", validate_rows, rows, work / "gx", validate_params(settings), ingested.batch_id)
    # As the lifecycle holds them (flows/data_stages.py stage_validate): the accepted rows only, the same table
    # when no row failed
    failed = rows["sample_id"].isin(outcome.failed)
    accepted = rows[~failed].reset_index(drop=True) if failed.any() else rows
    del rows, failed
    timed("transform", compute_sample_features, clean_dir, accepted, ingested.batch_id)
    timed("model_inputs", save_model_input_shards, work / "inputs", clean_dir, accepted, input_spec(settings))
    rows = ingested.report.rows_in
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # before Prefect joins the process
    # Transparent huge pages in RSS (numpy advises them for large arrays): a 2 MB page counts whole, so a run that
    # gets them reads higher than one that does not (the floor moved 291 <-> 313 MB with the same code in session 21)
    huge_mb = _anon_huge_pages_mb()
    result = {"rows": rows, "seconds": dict(seconds), "rows_per_s": {k: rows / v for k, v in seconds.items()},
              "total_s": sum(seconds.values()), "cpu_seconds": dict(cpu_seconds), "total_cpu_s": sum(cpu_seconds.values()),
              "system_seconds": dict(system_seconds), "total_system_s": sum(system_seconds.values()),
              "peak_rss_mb": peak_mb, "stage_peak_rss_mb": stage_peak_mb, "stage_start_rss_mb": stage_start_mb,
              "anon_huge_pages_mb": huge_mb}
    if prefect:
        result["clean_prefect_s"] = measure_prefect_clean(ingested.batch_dir, work)
        result["clean_prefect_ratio"] = result["clean_prefect_s"] / seconds["clean"]
    return result


def measure_prefect_clean(raw_dir: Path, work: Path) -> float:
    """The same clean through the lifecycle's Prefect subflow (chunks as tasks on its task runner).

    The ephemeral API is started by a warm-up flow first, so only the orchestration of the
    stage itself is compared with the plain call.
    """
    import os

    os.environ["PREFECT_HOME"] = str(work / "prefect")
    from prefect import flow

    from flows.lifecycle import run_clean_stage
    from flows.settings import load_settings

    flow(name="warm-up")(lambda: None)()
    settings = load_settings(work / "home", PROJECT / "params.yaml")
    started = time.perf_counter()
    run_clean_stage(settings, raw_dir)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    parser.add_argument("--out", type=Path, default=PROJECT / "benchmarks" / "results" / "data_scaling.json")
    parser.add_argument("--measure", type=Path, nargs=2, help=argparse.SUPPRESS)  # child mode: BATCH WORK
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(*args.measure)))
        return

    sys.path.insert(0, str(PROJECT))
    from examples.digits.demo import generate_demo_batch

    root = Path(tempfile.mkdtemp(prefix="flywheel-scaling-"))
    results = []
    try:
        generate_demo_batch(root / "base", samples=BASE_SAMPLES, seed=3, fault_rate=0.0)
        for size in args.sizes:
            batch = root / f"batch-{size}"
            started = time.perf_counter()
            build_scaled_batch(root / "base", batch, size)
            print(f"{size:>7} rows: generated in {time.perf_counter() - started:.0f} s", flush=True)
            child = subprocess.run([sys.executable, __file__, "--measure", str(batch), str(root / f"work-{size}")],
                                   capture_output=True, text=True, check=True)
            result = json.loads(child.stdout.strip().splitlines()[-1])
            results.append(result)
            per_stage = ", ".join(f"{k} {v:,.0f}/s ≤{result['stage_peak_rss_mb'][k]:.0f} MB"
                                  for k, v in result["rows_per_s"].items())
            print(f"{size:>7} rows: {result['total_s']:.1f} s, peak {result['peak_rss_mb']:.0f} MB ({per_stage}); "
                  f"clean as a Prefect subflow {result['clean_prefect_s']:.1f} s = ×{result['clean_prefect_ratio']:.2f} the plain call",
                  flush=True)
            shutil.rmtree(batch)
            shutil.rmtree(root / f"work-{size}")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    for small, large in zip(results, results[1:]):
        growth = large["rows"] / small["rows"]
        print(f"{small['rows']} → {large['rows']} rows ({growth:.0f}×): time ×{large['total_s'] / small['total_s']:.1f}, "
              f"peak memory ×{large['peak_rss_mb'] / small['peak_rss_mb']:.2f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
