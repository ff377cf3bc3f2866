"""Bulyan (El Mhamdi, Guerraoui & Rouault 2018): Krum picks θ = N − 2f updates, then a trimmed mean around the median."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from qbfl.aggregation.base import AggregationResult, canonical_inputs, require_clients
from qbfl.aggregation.summation import pairwise_squared_distances


def bulyan_selection(rows: np.ndarray, *, f: int) -> list[int]:
    """Indices of the θ = N − 2f rows Krum picks one by one, each time among the rows left.

    Each pick is the row whose squared distances to its r − f − 2 nearest other remaining rows
    sum least (r rows remain; ties → lower index). The paper's N ≥ 4f + 3 leaves r − f − 2 ≥ 1
    for f ≥ 2 only: the last picks use max(r − f − 2, 1) neighbours, as the paper leaves it
    open. Distances are computed once (order-fixed, exactly symmetric) and sums use fsum.
    """
    n = rows.shape[0]
    squared = pairwise_squared_distances(rows)
    remaining = list(range(n))
    chosen: list[int] = []
    while len(chosen) < n - 2 * f:
        r = len(remaining)
        if r == 1:
            chosen.append(remaining.pop())
            break
        neighbours = max(r - f - 2, 1)

        def score(i: int, neighbours: int = neighbours) -> float:
            others = sorted(float(squared[i, j]) for j in remaining if j != i)
            return math.fsum(others[:neighbours])

        best = min(remaining, key=lambda i: (score(i), i))
        remaining.remove(best)
        chosen.append(best)
    return sorted(chosen)


@dataclass(frozen=True)
class Bulyan:
    """Bulyan over Krum: θ = N − 2f rows by iterated Krum, then per coordinate the mean of the
    β = θ − 2f values closest to that coordinate's median among the θ (ties → lower id).

    Needs N ≥ 4f + 3 (the paper's condition; fewer than 4f + 1 leaves nothing to average).
    Selects the θ ids Krum picked. Stakes are not used. Not in ByzFL 0.0.11, so not checked
    against it.
    """

    name = "bulyan"

    def max_faults(self, n: int) -> int:
        """N ≥ 4f + 3."""
        return (n - 3) // 4

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
        require_clients(self.name, inputs.n, inputs.f, 4 * inputs.f + 3, "4f + 3")
        chosen = bulyan_selection(inputs.rows, f=inputs.f)
        picked = inputs.rows[chosen]  # (θ, P), id order
        theta = len(chosen)
        beta = theta - 2 * inputs.f
        ordered = np.sort(picked, axis=0)
        median = (ordered[(theta - 1) // 2] + ordered[theta // 2]) / 2.0
        # Per coordinate the β values nearest the median; a stable sort over rows in id order
        # sends ties to the lower id, so the kept set does not depend on the arrival order.
        rank = np.argsort(np.abs(picked - median), axis=0, kind="stable")
        keep = np.zeros(picked.shape, dtype=bool)
        np.put_along_axis(keep, rank[:beta], True, axis=0)
        acc = np.zeros(picked.shape[1], dtype=np.float64)
        for row, mask in zip(picked, keep, strict=True):  # id order: a fixed summation order
            acc += np.where(mask, row, 0.0)
        return AggregationResult(
            update=(acc / beta).astype(np.float32),
            selected=tuple(inputs.client_ids[i] for i in chosen),
        )
