"""Perceptual image hashes, and an index that finds a hash within a few bits of any kept one.

The hash is a 64-bit difference hash (dHash): shrink the image's grayscale view to 9x8, and let each bit
say whether a pixel is brighter than its right neighbour. Re-encoding (PNG → JPEG), mild
rescaling or brightness changes move it by a few bits at most; a different picture moves
about half of them.
"""

from __future__ import annotations

from collections.abc import Hashable

import numpy as np
from PIL import Image

HASH_BITS = 64


def compute_dhash(pixels: np.ndarray) -> int:
    """(H, W) uint8 grayscale → 64-bit dHash, as an int."""
    thumbnail = Image.fromarray(pixels).resize((9, 8), Image.Resampling.LANCZOS)
    small = np.asarray(thumbnail, dtype=np.int16)  # (8, 9)
    bits = (small[:, 1:] > small[:, :-1]).ravel()  # (64,)
    return int.from_bytes(np.packbits(bits).tobytes(), "big")


def hamming_distance(a: int, b: int) -> int:
    return (a ^ b).bit_count()


def _bands(value: int, count: int) -> list[int]:
    """`value` cut into `count` disjoint runs of bits."""
    edges = [round(i * HASH_BITS / count) for i in range(count + 1)]
    return [(value >> lo) & ((1 << (hi - lo)) - 1) for lo, hi in zip(edges, edges[1:])]


class NearHashIndex:
    """Kept hashes, grouped by a key that must match exactly, searchable within `max_bits`.

    Pigeonhole: cut 64 bits into max_bits + 1 bands; two hashes at most max_bits apart agree
    exactly on at least one band, so only hashes sharing a band are compared, not all of them.
    """

    def __init__(self, max_bits: int) -> None:
        if not 0 <= max_bits < HASH_BITS:
            raise ValueError(f"max_bits must be in 0..{HASH_BITS - 1}, got {max_bits}")
        self.max_bits = max_bits
        self._bands = max_bits + 1
        self._buckets: dict[tuple[Hashable, int, int], list[tuple[int, int, str]]] = {}  # (seq, hash, sample_id)
        self._added = 0

    def find(self, key: Hashable, value: int) -> tuple[str, int] | None:
        """The closest kept (sample_id, distance) with the same key within max_bits (earliest on ties), or None."""
        best: tuple[int, int, str] | None = None  # (distance, seq, sample_id)
        for band, part in enumerate(_bands(value, self._bands)):
            for seq, kept, sample_id in self._buckets.get((key, band, part), []):
                candidate = (hamming_distance(value, kept), seq, sample_id)
                if candidate[0] <= self.max_bits and (best is None or candidate < best):
                    best = candidate
        return None if best is None else (best[2], best[0])

    def add(self, key: Hashable, value: int, sample_id: str) -> None:
        for band, part in enumerate(_bands(value, self._bands)):
            self._buckets.setdefault((key, band, part), []).append((self._added, value, sample_id))
        self._added += 1
