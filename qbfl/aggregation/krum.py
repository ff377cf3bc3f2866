"""Krum (Blanchard et al. 2017): keep the single update closest to its N − f − 2 nearest neighbours."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from qbfl.aggregation.base import AggregationResult, canonical_inputs, require_clients
from qbfl.aggregation.summation import pairwise_squared_distances
from qbfl.errors import ConfigError


def krum_scores(updates: np.ndarray, *, f: int) -> np.ndarray:
    """Krum score of each row: sum of squared distances to its N − f − 2 nearest other rows: (N,).

    Rows are compared in float64 with order-fixed sums; each score is summed with math.fsum
    (correctly rounded, so independent of tie order among equal distances).
    """
    rows = np.ascontiguousarray(updates, dtype=np.float64)
    n = rows.shape[0]
    neighbours = n - f - 2
    if f < 0 or neighbours < 1:
        raise ConfigError(f"krum needs N ≥ f + 3 clients; got N = {n} with f = {f}")
    squared = pairwise_squared_distances(rows)
    scores = np.empty(n, dtype=np.float64)
    for i in range(n):
        others = np.delete(squared[i], i)
        scores[i] = math.fsum(np.sort(others)[:neighbours].tolist())
    return scores


@dataclass(frozen=True)
class Krum:
    """Classic Krum: the update with the smallest score, ties to the lower client id.

    Needs N ≥ f + 3 for the score to exist; Blanchard et al.'s guarantee that an honest update is
    chosen needs N ≥ 2f + 3. Selects exactly the chosen client.
    """

    name = "krum"

    def max_faults(self, n: int) -> int:
        """N ≥ f + 3: a score needs N − f − 2 ≥ 1 neighbours."""
        return n - 3

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
        require_clients(self.name, inputs.n, inputs.f, inputs.f + 3, "f + 3")
        scores = krum_scores(inputs.rows, f=inputs.f)
        # Rows are in ascending id order, so the first minimum is the lowest id among ties.
        best = min(range(inputs.n), key=lambda i: (scores[i], i))
        return AggregationResult(
            update=inputs.rows[best].astype(np.float32), selected=(inputs.client_ids[best],)
        )
