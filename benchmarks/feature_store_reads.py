"""What Feast's reads of the offline tables cost as batches accumulate: materializing the newest batch and a
training-set retrieval, on a store filled with `--batches` batches through a checkout's own writer.

Feast (DuckDB) reads a table's whole source on both: one file per table before the per-batch layout, one file per
batch and table after it. Run it on this checkout and on a worktree of an older one to compare the layouts on the
same machine (the batches are the same: benchmarks/feature_history.py's), e.g.

    git worktree add /tmp/before 3e38bce
    python benchmarks/feature_store_reads.py --batches 500 --rows 200
    python benchmarks/feature_store_reads.py --batches 500 --rows 200 --checkout /tmp/before

Reported: seconds of each of 3 materializations of the newest batch's window (the first also applies the
definitions and warms DuckDB; quote the median of the last two) and of one retrieval of the newest batch's rows.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=120)
    parser.add_argument("--rows", type=int, default=1000, help="rows per batch")
    parser.add_argument("--checkout", type=Path, default=PROJECT, help="the flywheel checkout whose store code runs")
    args = parser.parse_args()
    sys.path.insert(0, str(args.checkout.resolve()))
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    from features.env import apply_process_environment

    apply_process_environment()
    import pandas as pd

    import features.store as store

    sys.path.append(str(PROJECT))  # the batches' generator, after the checkout's own modules
    from benchmarks.feature_history import batch_frames

    with tempfile.TemporaryDirectory() as home:
        feast_dir = Path(home) / "feast"
        for run in range(1, args.batches + 1):
            for table, frame in batch_frames(run, args.rows).items():
                store.upsert_batch_table(feast_dir, table, f"batch{run:04d}", frame)
        newest = pd.Timestamp("2026-01-01T00:00:00Z") + pd.Timedelta(hours=args.batches)
        materialize = []
        for _ in range(3):
            started = time.perf_counter()
            store.apply_and_materialize(feast_dir, (newest - pd.Timedelta(seconds=1)).to_pydatetime())
            materialize.append(time.perf_counter() - started)
        entities = pd.DataFrame({"sample_id": [f"r{args.batches:04d}-{i:06d}" for i in range(args.rows)],
                                 "event_timestamp": newest + pd.Timedelta(days=1)})
        started = time.perf_counter()
        served = store.get_training_frame(feast_dir, entities)
        retrieval = time.perf_counter() - started
        files = sum(1 for _ in (feast_dir / "data").rglob("*.parquet"))
    result = {"checkout": str(args.checkout), "store_code": store.__file__, "batches": args.batches, "rows": args.rows,
              "parquet_files": files, "materialize_s": materialize,
              "materialize_median_warm_s": statistics.median(materialize[1:]), "retrieval_s": retrieval,
              "served_rows": int(served["img_mean"].notna().sum())}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
