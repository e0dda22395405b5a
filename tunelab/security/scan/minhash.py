"""Near-duplicate groups in O(n): MinHash signatures, LSH banding, then an exact Jaccard check.

Comparing every pair of 10,000 rows is 50 million comparisons; MinHash (Broder, 1997) turns each
row's shingle set into a short signature whose equal positions estimate the Jaccard similarity,
and banding the signature (Leskovec, Rajaraman & Ullman, *Mining of Massive Datasets*, ch. 3)
puts similar rows into the same bucket with high probability. Only rows sharing a bucket are
compared, each against the bucket's earliest row, with the exact Jaccard of their shingle sets,
so no pair is reported on an estimate alone. With 8 bands of 4 hashes a pair at Jaccard 0.8
shares a bucket with probability 1 - (1 - 0.8^4)^8 ≈ 0.985.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tunelab.security.scan.text import jaccard

BANDS, ROWS_PER_BAND = 8, 4
CHUNK = 1 << 20  # shingles hashed per numpy pass (bounds memory on large files)


def signatures(sets: Sequence[set[int]], seed: int = 0) -> np.ndarray:
    """(n, BANDS·ROWS_PER_BAND) uint64 MinHash signatures of ``sets`` (an empty set hashes like {0})."""
    k = BANDS * ROWS_PER_BAND
    rng = np.random.default_rng(seed)
    # multiply-shift hashing (Dietzfelbinger et al., 1997): (a·x + b) mod 2^64, top 32 bits;
    # uint64 arithmetic wraps, which is the "mod 2^64", and avoids a slow 64-bit modulo
    a = rng.integers(0, 1 << 63, size=k, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    b = rng.integers(0, 1 << 63, size=k, dtype=np.uint64)
    sizes = np.array([max(len(s), 1) for s in sets], dtype=np.int64)
    values = np.fromiter((x for s in sets for x in (s or (0,))), dtype=np.uint64, count=int(sizes.sum()))
    starts = np.concatenate(([0], np.cumsum(sizes)[:-1]))
    out = np.empty((len(sets), k), dtype=np.uint64)
    for j in range(k):
        hashed = (a[j] * values + b[j]) >> np.uint64(32)
        out[:, j] = np.minimum.reduceat(hashed, starts) if len(sets) else hashed[:0]
    return out


def groups(sets: Sequence[set[int]], threshold: float, seed: int = 0) -> list[int]:
    """For each set, the index of the earliest set it is a near-duplicate of (itself if none).

    Args:
        sets: shingle-hash sets, one per row, in file order.
        threshold: minimum exact Jaccard similarity to join a group.
    """
    parent = list(range(len(sets)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    if len(sets) < 2:
        return parent
    sig = signatures(sets, seed)
    mix = np.random.default_rng(seed + 1).integers(1, 1 << 63, size=ROWS_PER_BAND, dtype=np.uint64) | np.uint64(1)
    for band in range(BANDS):
        # one 64-bit key per row and band; only rows whose key repeats are looked at in Python
        keys = (sig[:, band * ROWS_PER_BAND : (band + 1) * ROWS_PER_BAND] * mix).sum(axis=1)
        _, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
        shared = np.flatnonzero(counts[inverse] > 1)
        first: dict[int, int] = {}
        for i in shared.tolist():
            j = first.setdefault(int(inverse[i]), i)
            if j == i:
                continue
            ri, rj = find(i), find(j)
            if ri != rj and jaccard(sets[i], sets[j]) >= threshold:
                parent[max(ri, rj)] = min(ri, rj)  # the earliest row stays the group's representative
    return [find(i) for i in range(len(sets))]
