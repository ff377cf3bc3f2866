"""Coordinate-wise trimmed mean (Yin et al. 2018): drop the f largest and f smallest per coordinate."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from qbfl.aggregation.base import AggregationResult, canonical_inputs, require_clients
from qbfl.aggregation.summation import plain_mean


@dataclass(frozen=True)
class TrimmedMean:
    """Per coordinate, sort the N values, drop f from each end, average the N − 2f left (N > 2f).

    The trim amount is the task's f, so up to f arbitrary values per coordinate are always dropped
    and the result stays inside the honest values' range. Selects everyone (it trims values, not
    clients).
    """

    name = "trimmed-mean"

    def max_faults(self, n: int) -> int:
        """N ≥ 2f + 1: at least one value per coordinate is left after trimming f from each end."""
        return (n - 1) // 2

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
        require_clients(self.name, inputs.n, inputs.f, 2 * inputs.f + 1, "2f + 1")
        ordered = np.sort(inputs.rows, axis=0)
        kept = ordered[inputs.f : inputs.n - inputs.f]
        mean = plain_mean(kept)
        return AggregationResult(update=mean.astype(np.float32), selected=inputs.client_ids)
