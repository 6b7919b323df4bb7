"""Paired bootstrap over the golden set: how sure is "the challenger changed metric m by Δ"?

Both models are scored on the same golden rows, so one resample of the rows serves both and
the per-row differences carry the pairing (rows both models get right or wrong cancel out).
A resample is a vector of multinomial counts `w` over the N rows; any mean over a subset of
rows (a slice) under that resample is `w[rows] @ x[rows] / w[rows].sum()`, so every metric and
every slice is read off the same B resamples with matrix products, no Python loop over B.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class BootstrapConfig:
    resamples: int  # B (params.yaml gate.bootstrap: defaults and their reasons in flows/settings.py)
    confidence: float  # two-sided; the lower end is then a one-sided bound
    seed: int  # same seed, same resamples: a decision can be recomputed exactly

    def __post_init__(self) -> None:
        if self.resamples < 100:
            raise ValueError(f"bootstrap resamples must be >= 100 for a usable interval, got {self.resamples}")
        if not 0.5 <= self.confidence < 1:
            raise ValueError(f"bootstrap confidence must be in [0.5, 1), got {self.confidence}")


def draw_resample_weights(n_rows: int, config: BootstrapConfig) -> np.ndarray:
    """(B, N) counts: how often each golden row appears in each resample (each row sums to N)."""
    if n_rows < 1:
        raise ValueError("the bootstrap needs at least one golden row")
    rng = np.random.default_rng(config.seed)
    return rng.multinomial(n_rows, np.full(n_rows, 1.0 / n_rows), size=config.resamples).astype(np.float64)


@dataclass(frozen=True)
class PairedChange:
    """Challenger − champion on one metric (or slice), with its bootstrap interval."""

    challenger: float
    champion: float
    change: float  # challenger − champion
    low: float
    high: float
    rel_change: float  # change / champion (nan when the champion scores 0)
    rel_low: float
    rel_high: float


def paired_change(
    challenger: np.ndarray, champion: np.ndarray, weights: np.ndarray, confidence: float, rows: np.ndarray | None = None
) -> PairedChange:
    """Point change of the mean and its percentile interval, over `rows` (a boolean mask) or all rows.

    `challenger`, `champion`: (N,) per-row scores of the same golden rows; `weights`: (B, N)
    from `draw_resample_weights`. A resample that happens to contain no row of the slice is left
    out of the interval (nan), which only matters for slices of a handful of rows.
    """
    challenger = np.asarray(challenger, dtype=np.float64)
    champion = np.asarray(champion, dtype=np.float64)
    if challenger.shape != champion.shape or challenger.ndim != 1:
        raise ValueError(f"paired scores must be two (N,) arrays of the same rows, got {challenger.shape} and {champion.shape}")
    if weights.shape[1] != challenger.shape[0]:
        raise ValueError(f"weights cover {weights.shape[1]} rows but the scores have {challenger.shape[0]}")
    mask = np.ones(len(challenger), dtype=bool) if rows is None else np.asarray(rows, dtype=bool)
    if not mask.any():
        raise ValueError("a paired change needs at least one row in the slice")
    w = weights[:, mask]  # (B, n)
    total = w.sum(axis=1)  # (B,)
    with np.errstate(invalid="ignore", divide="ignore"):
        chal_b = (w @ challenger[mask]) / total  # (B,)
        champ_b = (w @ champion[mask]) / total
        change_b = chal_b - champ_b
        rel_b = change_b / champ_b
    tail = (1.0 - confidence) / 2 * 100
    low, high = _percentiles(change_b, tail)
    rel_low, rel_high = _percentiles(rel_b, tail)
    chal, champ = float(challenger[mask].mean()), float(champion[mask].mean())
    rel = (chal - champ) / champ if champ != 0 else float("nan")
    return PairedChange(chal, champ, chal - champ, low, high, rel, rel_low, rel_high)


def _percentiles(values: np.ndarray, tail: float) -> tuple[float, float]:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return float("nan"), float("nan")
    low, high = np.percentile(finite, [tail, 100 - tail])
    return float(low), float(high)
