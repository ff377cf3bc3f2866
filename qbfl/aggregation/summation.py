"""Order-fixed float64 sums, distances and means: the arithmetic every node must reproduce bit for bit.

Only elementwise IEEE-754 operations (+, −, ×, ÷, sqrt), which are correctly rounded on every CPU
and in every SIMD lane, and sums whose association order is written out here. No BLAS (np.dot,
matmul, np.linalg.norm) and no np.sum on the consensus path: their reduction order may depend on
the CPU, the library build or the memory layout (DESIGN §5 step 3).
"""

from __future__ import annotations

import numpy as np


def ordered_sum(x: np.ndarray) -> np.ndarray:
    """Sum a (M, K) float64 array along its last axis by folding halves: (M,).

    Each step adds the second half of the columns onto the first (column j += column h + j); an odd
    column left over is added onto column 0. The association order depends only on K, so the
    result is bit-for-bit the same on any IEEE-754 machine; the rounding error grows as log2(K).
    """
    if x.ndim != 2:
        raise ValueError(f"ordered_sum expects a 2-D array, got shape {x.shape}")
    return _fold_in_place(np.array(x, dtype=np.float64, copy=True))


def _fold_in_place(buf: np.ndarray) -> np.ndarray:
    """``ordered_sum`` on a scratch (M, K) float64 buffer it may overwrite (no allocation per step)."""
    if buf.shape[1] == 0:
        return np.zeros(buf.shape[0], dtype=np.float64)
    acc = buf
    while acc.shape[1] > 1:
        k = acc.shape[1]
        half = k // 2
        if k % 2:
            acc[:, 0] += acc[:, 2 * half]
        acc[:, :half] += acc[:, half : 2 * half]
        acc = acc[:, :half]
    return acc[:, 0].copy()


def pairwise_squared_distances(rows: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances between all rows of a (N, P) float64 array: (N, N), exact symmetry.

    Row i is differenced against rows i+1..N−1 elementwise and each difference vector is summed with
    ``ordered_sum``; (a − b)² equals (b − a)² bitwise, so a pair's distance does not depend on which
    client has the lower index. Cost: N(N−1)/2 · P multiply-adds (50 × 4 842: ~6 M, tens of ms).
    """
    n = rows.shape[0]
    out = np.zeros((n, n), dtype=np.float64)
    for i in range(n - 1):
        diff = rows[i + 1 :] - rows[i]
        np.multiply(diff, diff, out=diff)
        dist = _fold_in_place(diff)
        out[i, i + 1 :] = dist
        out[i + 1 :, i] = dist
    return out


def row_dots(rows: np.ndarray, vector: np.ndarray) -> np.ndarray:
    """Dot product of every row with one vector, with ``ordered_sum``: (N,)."""
    return _fold_in_place(rows * vector)


def weighted_mean(rows: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Σ w_i·row_i / Σ w_i, accumulated row by row in the given (id) order, float64: (P,).

    Eq. 10. Weights must be ≥ 0 with a positive sum (the caller normalises stakes first).
    """
    acc = np.zeros(rows.shape[1], dtype=np.float64)
    total = 0.0
    for row, w in zip(rows, weights, strict=True):
        weight = float(w)
        if weight == 0.0:
            continue
        acc += weight * row
        total += weight
    if total <= 0.0:
        raise ValueError("weighted_mean needs weights with a positive sum")
    return acc / total


def plain_mean(rows: np.ndarray) -> np.ndarray:
    """Unweighted mean of the rows, accumulated row by row in the given order: (P,)."""
    acc = np.zeros(rows.shape[1], dtype=np.float64)
    for row in rows:
        acc += row
    return acc / rows.shape[0]


def stake_weights(stakes: np.ndarray) -> np.ndarray:
    """Stakes → aggregation weights: negative stakes (penalised clients) weigh 0; all ≤ 0 → equal.

    Eq. 10 assumes s(i) > 0; DESIGN §5 step 5 lets penalties drive stakes to 0 or below, and a
    negative weight would push the mean away from an update, so such clients simply weigh nothing.
    """
    weights = np.where(stakes > 0, stakes, 0.0).astype(np.float64)
    if not (weights > 0).any():
        return np.ones_like(weights)
    return weights
