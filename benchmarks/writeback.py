"""What writing files back while a stage runs (features.atomic.writing_back) saves ingest and clean.

Both stages fill a staging folder with thousands of files and publish it in one rename, after one flush to disk
(`publish_directory`), while no worker has anything to do. With `writing_back`, a background thread asks the kernel
to write dirty files out every half second while the stage runs, so that last flush finds little left. This times
both stages as the lifecycle runs them without a cluster (ingest's chunks in turn, clean's on its decoding threads)
on a batch scaled from the demo (`data_scaling.build_scaled_batch`), in pairs: once as before (the stages' own
`writing_back` swapped for a block that does nothing) and once as shipped, alternating which goes first. Every run
writes into a fresh home, after an untimed `os.sync()`, so each starts with nothing dirty. Per run: each stage's
wall seconds and the seconds inside the final flush (`features.atomic._fsync_tree`, wrapped to be timed). Per pair:
before / shipped for the two stages together. The machine's load average is recorded before and after.

Usage: python benchmarks/writeback.py [--rows 5000] [--pairs 3] [--out FILE]
"""

from __future__ import annotations

import argparse
import contextlib
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
BASE_SAMPLES = 400  # real demo samples the scaled batch is perturbed from (as in data_scaling.py)
VARIANTS = ("before", "shipped")


def timed_stages(settings, landing: Path, home: Path, flushes: list[float]) -> dict[str, float]:
    """Ingest and clean of the landing batch into `home`: wall seconds of each, and of their final flushes."""
    from flows.data_stages import stage_clean, stage_ingest

    settings = dataclasses.replace(settings, paths=dataclasses.replace(settings.paths, home=home))
    os.sync()  # nothing dirty at the start: the previous run's files are on disk
    flushes.clear()
    started = time.perf_counter()
    raw = stage_ingest(settings, landing)
    ingest_s = time.perf_counter() - started
    started = time.perf_counter()
    stage_clean(settings, raw.batch_dir)
    clean_s = time.perf_counter() - started
    if len(flushes) != 2:
        raise RuntimeError(f"expected one final flush per stage, timed {len(flushes)}")
    return {"ingest": ingest_s, "clean": clean_s, "ingest_flush": flushes[0], "clean_flush": flushes[1]}


def measure(work: Path, rows: int, pairs: int) -> dict:
    from benchmarks.data_scaling import build_scaled_batch
    from examples.digits.demo import generate_demo_batch
    from features import atomic, clean, ingest
    from flows.settings import load_settings

    load_at_start = os.getloadavg()[0]
    generate_demo_batch(work / "base", samples=BASE_SAMPLES, seed=3, fault_rate=0.0)
    landing = work / "landing" / "batch-writeback"
    build_scaled_batch(work / "base", landing, rows)
    settings = load_settings(work / "home", PROJECT / "params.yaml")

    flushes: list[float] = []
    fsync_tree = atomic._fsync_tree

    def timed_flush(folder: Path) -> None:
        started = time.perf_counter()
        fsync_tree(folder)
        flushes.append(time.perf_counter() - started)

    atomic._fsync_tree = timed_flush
    shipped = ingest.writing_back
    runs: dict[str, list[dict[str, float]]] = {variant: [] for variant in VARIANTS}
    homes = iter(range(10**6))
    timed_stages(settings, landing, work / "warm", flushes)  # untimed: imports, code paths, the page cache
    for pair in range(pairs):
        for variant in (VARIANTS if pair % 2 == 0 else VARIANTS[::-1]):
            switch = shipped if variant == "shipped" else contextlib.nullcontext
            ingest.writing_back = clean.writing_back = switch
            result = timed_stages(settings, landing, work / f"home-{next(homes)}", flushes)
            runs[variant].append(result)
            print(f"pair {pair + 1}, {variant}: " + ", ".join(f"{k} {v:.2f} s" for k, v in result.items()), flush=True)
    ingest.writing_back = clean.writing_back = shipped

    def total(run: dict[str, float]) -> float:
        return run["ingest"] + run["clean"]

    def medians(variant: str) -> dict[str, float]:
        return {key: statistics.median(run[key] for run in runs[variant]) for key in runs[variant][0]}

    pair_ratios = [total(a) / total(b) for a, b in zip(runs["before"], runs["shipped"])]
    return {
        "rows": rows,
        "pairs": pairs,
        "runs": runs,
        "median_s": {variant: medians(variant) for variant in VARIANTS},
        "pair_ratios_before_over_shipped": pair_ratios,
        "ratio_before_over_shipped": statistics.median(pair_ratios),
        "machine": {"cpus": os.cpu_count(), "load_avg_1m_at_start": load_at_start,
                    "load_avg_1m_at_end": os.getloadavg()[0], "python": platform.python_version()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=PROJECT / "benchmarks" / "results" / "writeback.json")
    args = parser.parse_args()
    if args.rows < 1 or args.pairs < 1:
        parser.error("--rows and --pairs must be at least 1")

    sys.path.insert(0, str(PROJECT))
    from features.env import apply_process_environment

    apply_process_environment()
    work = Path(tempfile.mkdtemp(prefix="flywheel-writeback-"))
    try:
        result = measure(work, args.rows, args.pairs)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    before, shipped = result["median_s"]["before"], result["median_s"]["shipped"]
    print(f"{result['rows']} rows, medians of {result['pairs']} pairs: ingest + clean {before['ingest'] + before['clean']:.2f}"
          f" s before, {shipped['ingest'] + shipped['clean']:.2f} s shipped (×{result['ratio_before_over_shipped']:.3f},"
          f" pairs {', '.join(f'×{r:.3f}' for r in result['pair_ratios_before_over_shipped'])}); final flushes"
          f" ingest {before['ingest_flush']:.2f} -> {shipped['ingest_flush']:.2f} s, clean {before['clean_flush']:.2f}"
          f" -> {shipped['clean_flush']:.2f} s (load {result['machine']['load_avg_1m_at_end']:.1f})")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
