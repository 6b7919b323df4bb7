"""The feature store's offline tables as batches accumulate: what one run's write costs after K earlier runs.

Each run writes its batch's rows into the four tables (image, audio and caption statistics, labels), as the
transform and label stages do. Two layouts, each in its own process, on the same batches:

- `single_file`: one parquet file per table, read whole, the batch's old rows dropped, written whole again
  (flywheel's layout before this benchmark; the function below is that code, kept as the baseline);
- `per_batch`: `features.store.upsert_batch_table`, one file per batch and table.

Reported at a few run counts: seconds of the run's writes, the process's peak RSS growth over the writes
(sampled every 20 ms), and the bytes the run adds to a DVC cache of `feast/data` (DVC stores each file by the
md5 of its content, so a file rewritten with other bytes is stored again whole, an unchanged one not).
Ratios are single_file / per_batch at the same run.

Usage: python benchmarks/feature_history.py [--runs 60] [--rows 2000] [--out FILE]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT))

TABLES = ("image_stats", "audio_stats", "caption_stats", "labels")


def batch_frames(run: int, rows: int):
    """The run's rows for each table: distinct sample ids, statistics and labels drawn per run."""
    import numpy as np
    import pandas as pd

    from features.store import TABLE_COLUMNS
    from features.transform import CATEGORICAL_FEATURES

    rng = np.random.default_rng(run)
    ids = [f"r{run:04d}-{i:06d}" for i in range(rows)]
    when = pd.Timestamp("2026-01-01T00:00:00Z") + pd.Timedelta(hours=run)
    stats = pd.DataFrame({"sample_id": ids, "event_timestamp": when})
    for table in ("image_stats", "audio_stats", "caption_stats"):
        for column in TABLE_COLUMNS[table]:
            if column not in CATEGORICAL_FEATURES:
                stats[column] = rng.random(rows, dtype=np.float32)
    stats["language"], stats["cap_script"] = "en", "LATIN"
    labels = pd.DataFrame({"sample_id": ids, "event_timestamp": when,
                           "label": pd.array(rng.integers(0, 10, rows), dtype="Int64"),
                           "label_source": "label_model", "label_confidence": rng.random(rows),
                           "label_votes": ['{"lf_a": 1, "lf_b": -1}'] * rows})
    return {table: labels if table == "labels" else stats for table in TABLES}


def single_file_upsert(feast_dir: Path, table: str, batch_id: str, frame) -> None:
    """The baseline: the whole table read, this batch's rows replaced, the whole table written again."""
    import pandas as pd

    from features.io import save_parquet
    from features.store import KEYS, TABLE_COLUMNS

    path = feast_dir / "data" / f"{table}.parquet"
    fresh = frame.assign(batch_id=batch_id)[[*KEYS, *TABLE_COLUMNS[table]]]
    if path.exists():
        existing = pd.read_parquet(path)
        fresh = pd.concat([existing[existing["batch_id"] != batch_id], fresh], ignore_index=True)
    save_parquet(path, fresh)


def _digests(folder: Path) -> dict[str, int]:
    """md5 -> size of every file under `folder`: the objects a DVC cache holds for it."""
    return {hashlib.md5(path.read_bytes()).hexdigest(): path.stat().st_size
            for path in folder.rglob("*") if path.is_file() and not path.name.startswith(".")}


def child(layout: str, runs: int, rows: int, report_at: list[int]) -> list[dict]:
    from benchmarks.data_scaling import RssSampler
    from features.env import apply_process_environment

    apply_process_environment()
    from features.store import upsert_batch_table

    write = upsert_batch_table if layout == "per_batch" else single_file_upsert
    sampler = RssSampler()
    cache: dict[str, int] = {}
    results = []
    with tempfile.TemporaryDirectory() as home:
        feast_dir = Path(home) / "feast"
        (feast_dir / "data").mkdir(parents=True)
        for run in range(1, runs + 1):
            frames = batch_frames(run, rows)
            sampler.reset()
            started = time.perf_counter()
            for table, frame in frames.items():
                write(feast_dir, table, f"batch{run:04d}", frame)
            seconds = time.perf_counter() - started
            peak = sampler.peak_mb()
            objects = _digests(feast_dir / "data")
            added = sum(size for digest, size in objects.items() if digest not in cache)
            cache.update(objects)
            if run in report_at:
                results.append({"run": run, "rows_before": (run - 1) * rows, "write_s": seconds,
                                "peak_rss_mb": peak, "dvc_bytes_added": added,
                                "dvc_cache_bytes": sum(cache.values())})
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=60)
    parser.add_argument("--rows", type=int, default=2000, help="rows per batch")
    parser.add_argument("--out", type=Path, default=PROJECT / "benchmarks" / "results" / "feature_history.json")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    report_at = sorted({1, 2, max(args.runs // 4, 1), max(args.runs // 2, 1), args.runs})
    if args.child:
        print(json.dumps(child(args.child, args.runs, args.rows, report_at)))
        return
    layouts = {}
    for layout in ("single_file", "per_batch"):
        done = subprocess.run([sys.executable, __file__, "--child", layout, "--runs", str(args.runs),
                               "--rows", str(args.rows)], capture_output=True, text=True, check=True)
        layouts[layout] = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"{args.rows} rows a batch; per run: seconds of the four tables' writes, peak RSS (MB), bytes added to "
          "a DVC cache (MB); single_file / per_batch")
    rows = []
    for old, new in zip(layouts["single_file"], layouts["per_batch"]):
        entry = {"run": old["run"], "rows_before": old["rows_before"], "single_file": old, "per_batch": new,
                 "write_ratio": old["write_s"] / new["write_s"],
                 "dvc_added_ratio": old["dvc_bytes_added"] / new["dvc_bytes_added"]}
        rows.append(entry)
        print(f"run {old['run']:>4} ({old['rows_before']:>7} rows before): write {old['write_s']:.3f} / "
              f"{new['write_s']:.3f} s (x{entry['write_ratio']:.1f}), peak RSS {old['peak_rss_mb']:.0f} / "
              f"{new['peak_rss_mb']:.0f}, DVC +{old['dvc_bytes_added'] / 2**20:.2f} / +{new['dvc_bytes_added'] / 2**20:.2f}"
              f" (cache {old['dvc_cache_bytes'] / 2**20:.1f} / {new['dvc_cache_bytes'] / 2**20:.1f})", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"runs": args.runs, "rows_per_batch": args.rows, "reported": rows}, indent=2))
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
