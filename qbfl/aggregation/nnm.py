"""Nearest-neighbour mixing (Allouah et al. 2023), a pre-aggregation in front of any rule: ``nnm+qbfl``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from qbfl.aggregation.base import AggregationResult, Aggregator, canonical_inputs, require_clients
from qbfl.aggregation.summation import pairwise_squared_distances, plain_mean

PREFIX = "nnm+"


def nearest_neighbour_mix(rows: np.ndarray, *, f: int) -> np.ndarray:
    """Each row replaced by the mean of its N − f nearest rows (itself included): (N, P) float64.

    "Fixing by mixing" (Allouah, Farhadkhani, Guerraoui, Gupta, Pinot, Stephan, AISTATS 2023):
    mixing shrinks the spread of the honest rows and bounds how far f Byzantine rows can drag
    any mixed row, which lifts Krum, Median, Trimmed-Mean, the geometric median, … to the
    optimal error under heterogeneity. Neighbours by exact squared distance, ties → lower
    index (rows are in id order), each mean accumulated in id order: order-free, bit-exact.
    """
    n = rows.shape[0]
    k = n - f
    squared = pairwise_squared_distances(rows)
    mixed = np.empty_like(rows)
    for i in range(n):
        row = squared[i].tolist()
        near = sorted(range(n), key=lambda j: (row[j], j))[:k]
        mixed[i] = plain_mean(rows[sorted(near)])
    return mixed


@dataclass(frozen=True)
class NearestNeighbourMixing:
    """``nnm+<rule>``: mix by nearest neighbours (f as given), then aggregate with the inner rule.

    The inner rule sees the mixed rows under the same client ids, stakes, f and previous update,
    so its selection names the clients whose *mixed* rows it kept (each a mean of N − f
    clients' updates); stakes go to them as for the rule alone.
    """

    inner: Aggregator

    @property
    def name(self) -> str:
        return PREFIX + self.inner.name

    def max_faults(self, n: int) -> int:
        """N − f ≥ 1 neighbours to mix, and whatever the inner rule needs."""
        return min(n - 1, self.inner.max_faults(n))

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
        require_clients(self.name, inputs.n, inputs.f, inputs.f + 1, "f + 1")
        mixed = nearest_neighbour_mix(inputs.rows, f=inputs.f)
        return self.inner.aggregate(
            mixed,
            client_ids=inputs.client_ids,
            stakes=inputs.stakes,
            f=inputs.f,
            previous=inputs.previous,
        )
