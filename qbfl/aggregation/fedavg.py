"""FedAvg: the plain mean of all updates (every client holds 775 images, so sample weights are equal)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from qbfl.aggregation.base import NO_FAULT_LIMIT, AggregationResult, canonical_inputs
from qbfl.aggregation.summation import plain_mean


@dataclass(frozen=True)
class FedAvg:
    """McMahan et al.'s FedAvg with equal sample counts: mean of all rows; selects everyone."""

    name = "fedavg"

    def max_faults(self, n: int) -> int:
        """Any f: the mean ignores it (no robustness at all, f = 0 is its only honest reading)."""
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
        mean = plain_mean(inputs.rows)
        return AggregationResult(update=mean.astype(np.float32), selected=inputs.client_ids)
