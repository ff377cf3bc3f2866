"""Coordinate-wise median (Yin et al. 2018)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from qbfl.aggregation.base import NO_FAULT_LIMIT, AggregationResult, canonical_inputs


@dataclass(frozen=True)
class Median:
    """Per coordinate the middle value, or the mean of the two middle values when N is even.

    Robust while fewer than half the values are arbitrary (N ≥ 2f + 1 for odd N, 2f + 2 for even
    N); f itself is not used. Selects everyone.
    """

    name = "median"

    def max_faults(self, n: int) -> int:
        """Any f: f is not used (the breakdown point is < N/2 whatever f says)."""
        return NO_FAULT_LIMIT if n >= 1 else -1

    def aggregate(
        self,
        updates: np.ndarray,
        *,
        client_ids: Sequence[int],
        stakes: np.ndarray,
        f: int,
        previous: np.ndarray | None,
    ) -> AggregationResult:
        inputs = canonical_inputs(
            updates, client_ids=client_ids, stakes=stakes, f=f, previous=previous
        )
        middle = coordinate_median(inputs.rows)
        return AggregationResult(update=middle.astype(np.float32), selected=inputs.client_ids)


def coordinate_median(rows: np.ndarray) -> np.ndarray:
    """Per coordinate the middle value, or the mean of the two middle ones: (P,) float64, exact.

    Odd N: both indices name the middle row and (a + a) / 2 == a exactly (no overflow from
    float32 values). Even N: (a + b) / 2 in float64 rounds once, monotonically, so it lies in
    [a, b].
    """
    ordered = np.sort(rows, axis=0)
    n = rows.shape[0]
    return (ordered[(n - 1) // 2] + ordered[n // 2]) / 2.0
