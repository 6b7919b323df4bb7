"""What importing Feast costs a stage's process, as Feast ships and as flywheel imports it.

Feast decorates its definition classes (Entity, FeatureView, FeatureService, Field, the data sources …) with
typeguard's `@typechecked`, which re-parses and recompiles every method's source while the module loads.
`features.store.import_feast` imports Feast with that decorator a no-op (as `python -O` makes it) and then
restores typeguard. Every process that reaches transform, label or training pays the import once: each
`flywheel` run, each `dvc repro` stage, each worker.

Each sample is a fresh interpreter: `import feast` (baseline) against `features.store.import_feast()`,
interleaved pairwise so machine noise hits both alike, timed by the child's own CPU time (user + system,
not wall-clock: the machines are shared) and wall time. The ratio is flywheel's over the baseline's, the
median of the pairs. The machine's load is recorded before and after.

Usage: python benchmarks/feast_import.py [--repeats 7] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT))

from features.env import apply_process_environment  # noqa: E402

# Each child reports its own CPU time and the wall time of the import alone (not the interpreter's start).
PROBE = """
import json, os, sys, time
sys.path.insert(0, {project!r})
from features.env import apply_process_environment
apply_process_environment()
started, cpu = time.perf_counter(), os.times()
{statement}
import feast.feature_view  # both: a definition class exists and works
after = os.times()
print(json.dumps({{"wall": time.perf_counter() - started,
                   "cpu": (after.user - cpu.user) + (after.system - cpu.system)}}))
"""
VARIANTS = {"feast as shipped": "import feast",
            "flywheel (import_feast)": "from features.store import import_feast; import_feast()"}


def sample(statement: str) -> dict[str, float]:
    done = subprocess.run([sys.executable, "-c", PROBE.format(project=str(PROJECT), statement=statement)],
                          cwd=PROJECT, env=os.environ, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", type=Path, default=PROJECT / "benchmarks" / "results" / "feast_import.json")
    args = parser.parse_args()
    apply_process_environment()
    load_before = os.getloadavg()
    samples: dict[str, list[dict[str, float]]] = {name: [] for name in VARIANTS}
    for _ in range(args.repeats):
        for name, statement in VARIANTS.items():
            samples[name].append(sample(statement))
    baseline, ours = (samples[name] for name in VARIANTS)
    ratios = {kind: statistics.median(o[kind] / b[kind] for b, o in zip(baseline, ours)) for kind in ("cpu", "wall")}
    report = {
        "benchmark": "feast_import", "python": platform.python_version(), "cpus": os.cpu_count(),
        "load_before": load_before, "load_after": os.getloadavg(), "repeats": args.repeats,
        "median_seconds": {name: {kind: statistics.median(s[kind] for s in runs) for kind in ("cpu", "wall")}
                           for name, runs in samples.items()},
        "ratio_flywheel_over_shipped": ratios,
        "samples": samples,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    for name, medians in report["median_seconds"].items():
        print(f"{name:26s} CPU {medians['cpu']:.2f} s   wall {medians['wall']:.2f} s")
    print(f"ratio (median of pairs): CPU {ratios['cpu']:.2f}, wall {ratios['wall']:.2f}; load {load_before[0]:.1f} → "
          f"{report['load_after'][0]:.1f}; written to {args.out}")


if __name__ == "__main__":
    main()
