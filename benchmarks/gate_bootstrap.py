"""The gate's paired bootstrap: every metric and slice read off one (B, N) resample matrix, against
the plain way of resampling (a Python loop over the B resamples, indexing the rows of each).

Both compute the same intervals (checked here) for the shipped policy's shape: 1,000 resamples of
a 200-row golden set, 3 headline metrics plus the same 3 on each of 20 slices (10 classes, 10 voices),
63 intervals. Interleaved repeats, so machine noise hits both alike; the figure is the ratio.

Usage: python benchmarks/gate_bootstrap.py [--rows 200] [--repeats 5] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT))

from models.bootstrap import BootstrapConfig, draw_resample_weights, paired_change  # noqa: E402


def checks(rows: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray, np.ndarray | None]]:
    """(challenger, champion, slice mask) per interval the shipped policy asks for."""
    rng = np.random.default_rng(seed)
    group = rng.integers(0, 10, size=(2, rows))  # class and voice of each golden row
    pairs = [((rng.random(rows) < 0.85).astype(float), (rng.random(rows) < 0.8).astype(float)) for _ in range(3)]
    out: list[tuple[np.ndarray, np.ndarray, np.ndarray | None]] = [(a, b, None) for a, b in pairs]
    for column in group:
        for value in range(10):
            out += [(a, b, column == value) for a, b in pairs]
    return out


def matrix_way(work, weights: np.ndarray) -> list[tuple[float, float]]:
    return [(c.low, c.high) for c in (paired_change(a, b, weights, 0.9, mask) for a, b, mask in work)]


def loop_way(work, weights: np.ndarray) -> list[tuple[float, float]]:
    """Per resample, the rows it draws (counts → repeated indices), then each slice's mean difference."""
    draws = [np.repeat(np.arange(weights.shape[1]), w.astype(int)) for w in weights]
    intervals = []
    for a, b, mask in work:
        diffs = []
        for idx in draws:
            picked = idx if mask is None else idx[mask[idx]]
            diffs.append(float(np.mean(a[picked] - b[picked])) if len(picked) else np.nan)
        intervals.append(tuple(np.nanpercentile(diffs, [5.0, 95.0])))
    return intervals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=PROJECT / "benchmarks" / "results" / "gate_bootstrap.json")
    args = parser.parse_args()
    from flows.settings import BootstrapParams

    weights = draw_resample_weights(args.rows, BootstrapConfig(**BootstrapParams().model_dump()))  # gate.bootstrap's defaults
    work = checks(args.rows)
    fast, slow = matrix_way(work, weights), loop_way(work, weights)
    assert np.allclose(fast, slow, atol=1e-9, equal_nan=True), "the two ways disagree"
    seconds: dict[str, list[float]] = {"matrix": [], "loop": []}
    for _ in range(args.repeats):
        for name, way in (("matrix", matrix_way), ("loop", loop_way)):
            started = time.perf_counter()
            way(work, weights)
            seconds[name].append(time.perf_counter() - started)
    medians = {name: statistics.median(values) for name, values in seconds.items()}
    result = {"rows": args.rows, "resamples": weights.shape[0], "intervals": len(work), "repeats": args.repeats,
              "median_s": medians, "min_s": {k: min(v) for k, v in seconds.items()},
              "max_s": {k: max(v) for k, v in seconds.items()}, "ratio_matrix_over_loop": medians["matrix"] / medians["loop"]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{len(work)} intervals, {weights.shape[0]} resamples of {args.rows} rows: matrix {medians['matrix'] * 1000:.1f} ms, "
          f"loop {medians['loop'] * 1000:.1f} ms (median of {args.repeats}); ratio {result['ratio_matrix_over_loop']:.3f}")


if __name__ == "__main__":
    main()
