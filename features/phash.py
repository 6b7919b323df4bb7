"""Perceptual image hashes, and the search for a hash within a few bits of an earlier kept one.

The hash is a 64-bit difference hash (dHash): shrink the image's grayscale view to 9x8, and let each bit
say whether a pixel is brighter than its right neighbour. Re-encoding (PNG → JPEG), mild
rescaling or brightness changes move it by a few bits at most; a different picture moves
about half of them.
"""

from __future__ import annotations

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


def band_edges(max_bits: int) -> list[tuple[int, int]]:
    """64 bits cut into max_bits + 1 disjoint runs (low bit, high bit): two hashes at most max_bits apart
    agree exactly on at least one run (pigeonhole)."""
    if not 0 <= max_bits < HASH_BITS:
        raise ValueError(f"max_bits must be in 0..{HASH_BITS - 1}, got {max_bits}")
    edges = [round(i * HASH_BITS / (max_bits + 1)) for i in range(max_bits + 2)]
    return list(zip(edges, edges[1:]))


def find_near_matches(keys: np.ndarray, hashes: np.ndarray, max_bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows taken in order; each is matched to the closest earlier *kept* row with the same key whose hash
    is within `max_bits` (the earliest on ties), and a matched row is not kept. `keys`: (N,) integers that
    must be equal; `hashes`: (N,) uint64. Returns (match, distance): the matched row's position, -1 where
    the row is kept, and the distance in bits.

    Held per row: a few integer arrays (no per-row objects). Only hashes sharing a key and a band
    (band_edges) are compared: per band, rows are sorted by (key, band value), so a row's candidates are
    the run of its group before it."""
    count = len(hashes)
    match, distance = np.full(count, -1, np.int64), np.zeros(count, np.int64)
    hashes = np.asarray(hashes, np.uint64)
    bands: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # per band: order, group start, rank
    has_earlier = np.zeros(count, bool)
    for low, high in band_edges(max_bits):
        part = (hashes >> np.uint64(low)) & np.uint64((1 << (high - low)) - 1)
        order = np.lexsort((part, keys))  # stable: a group's rows stay in row order
        first = np.ones(count, bool)
        first[1:] = (keys[order][1:] != keys[order][:-1]) | (part[order][1:] != part[order][:-1])
        start = np.maximum.accumulate(np.where(first, np.arange(count), 0))
        rank = np.empty(count, np.int64)
        rank[order] = np.arange(count)
        has_earlier[order[~first]] = True
        bands.append((order, start, rank))
    kept = np.ones(count, bool)
    for row in np.flatnonzero(has_earlier):  # the rest have no earlier row sharing a band: kept
        candidates = np.concatenate([order[start[rank[row]]:rank[row]] for order, start, rank in bands])
        candidates = candidates[kept[candidates]]
        bits = np.bitwise_count(hashes[candidates] ^ hashes[row]).astype(np.int64)
        close = bits <= max_bits
        if close.any():
            best = np.lexsort((candidates[close], bits[close]))[0]  # nearest, then earliest
            match[row], distance[row] = candidates[close][best], bits[close][best]
            kept[row] = False
    return match, distance
