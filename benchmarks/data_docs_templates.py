"""What compiling Data Docs templates once per process (features/gx_views.py) saves a validation.

GX made a Jinja environment for every Data Docs build, so every validation compiled a page's templates again.
This runs the clean-rows suite on the same demo-like table into one GX context, in one process pinned to one
core, in interleaved pairs: once with the process's compiled templates dropped first (what every validation
paid before: the baseline) and once with them kept (flywheel now). It reports each side's CPU seconds per
validation (the process's own time) and the paired ratios baseline / kept. The first validation, which opens
and scaffolds the context, is left out. The machine's load average is recorded before and after.

Usage: python benchmarks/data_docs_templates.py [--rows 200] [--pairs 8] [--out FILE]
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
sys.path.insert(0, str(PROJECT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200)
    parser.add_argument("--pairs", type=int, default=8)
    parser.add_argument("--out", type=Path, default=PROJECT / "benchmarks" / "results" / "data_docs_templates.json")
    args = parser.parse_args()
    if args.pairs < 1 or args.rows < 1:
        parser.error("--pairs and --rows must be at least 1")
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    from features.env import apply_process_environment

    apply_process_environment()
    from features.gx_views import forget_compiled_templates
    from features.validate import validate_rows
    from tests.unit.params_support import validate_params
    from tests.unit.test_validate import make_clean_rows

    params = validate_params(n_classes=10, languages=("en", "de", "fr", "es"))
    rows = make_clean_rows(args.rows)
    load_before = os.getloadavg()
    seconds: dict[str, list[float]] = {"compiled_each_time": [], "compiled_once": []}
    with tempfile.TemporaryDirectory(prefix="flywheel-bench-") as root:
        gx_dir = Path(root) / "gx"
        validate_rows(rows, gx_dir, params, "b0")  # opens and scaffolds the context: not timed
        for pair in range(args.pairs):
            order = list(seconds) if pair % 2 == 0 else list(reversed(seconds))
            for side in order:
                if side == "compiled_each_time":
                    forget_compiled_templates()
                started = time.process_time()
                validate_rows(rows, gx_dir, params, f"b{pair + 1}-{side}")
                seconds[side].append(round(time.process_time() - started, 4))
            print(f"pair {pair + 1}/{args.pairs}: " + ", ".join(f"{side} {values[-1]:.3f} CPU-s"
                                                                  for side, values in seconds.items()), flush=True)
    ratios = [before / after for before, after in zip(seconds["compiled_each_time"], seconds["compiled_once"])]
    result = {
        "what": f"validate_rows of {args.rows} clean rows into one GX context, one core, CPU seconds per validation",
        "load_before": load_before, "load_after": os.getloadavg(),
        "seconds": seconds,
        "median": {side: statistics.median(values) for side, values in seconds.items()},
        "ratio_each_time_over_once": {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios),
                                      "pairs": [round(r, 3) for r in ratios]},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("median", "ratio_each_time_over_once")}, indent=2))
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
