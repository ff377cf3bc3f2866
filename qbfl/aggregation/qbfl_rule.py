"""The paper's aggregation rule (Alg. 2): score by direction and consistency, keep N − f − 2, stake-average."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from qbfl.aggregation.base import AggregationResult, canonical_inputs, require_clients
from qbfl.aggregation.summation import (
    ordered_sum,
    pairwise_squared_distances,
    row_dots,
    stake_weights,
    weighted_mean,
)
from qbfl.errors import ConfigError


def _zscore(values: np.ndarray) -> np.ndarray:
    """(x − μ)/σ with population σ across candidates; σ = 0 → all 0 (nothing to tell apart).

    μ and σ² use math.fsum (correctly rounded), so they do not depend on the candidates' order.
    """
    data = values.tolist()
    n = len(data)
    mu = math.fsum(data) / n
    var = math.fsum((x - mu) * (x - mu) for x in data) / n
    sigma = math.sqrt(var)
    if sigma == 0.0:
        return np.zeros(n, dtype=np.float64)
    return np.array([(x - mu) / sigma for x in data], dtype=np.float64)


def qbfl_scores(
    updates: np.ndarray, *, previous: np.ndarray | None, f: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Alg. 2 lines 1–5 for each row: (v1, v2, v), each (N,) float64.

    v1(i) = cos(d_i, previous) (Eq. 7); 0 when previous is None or zero (first round) or d_i is zero.
    v2(i) = Σ of Euclidean distances to the N − f − 1 nearest other rows (Eq. 8).
    v(i)  = z(v1)(i) − z(v2)(i) (Eq. 9), z over all candidates.
    Permutation-equivariant bit for bit: row i's values depend only on the multiset of rows.
    """
    rows = np.ascontiguousarray(updates, dtype=np.float64)
    n = rows.shape[0]
    nearest = n - f - 1
    if f < 0 or nearest < 1:
        raise ConfigError(f"qbfl needs N ≥ f + 2 rows to score; got N = {n} with f = {f}")

    v1 = np.zeros(n, dtype=np.float64)
    if previous is not None:
        prev = np.ascontiguousarray(previous, dtype=np.float64)
        prev_norm = math.sqrt(float(ordered_sum((prev * prev)[None, :])[0]))
        if prev_norm > 0.0:
            norms = np.sqrt(ordered_sum(rows * rows))
            dots = row_dots(rows, prev)
            nonzero = norms > 0.0
            # Eq. 7; a zero update has no direction, so it scores neutral (0) rather than NaN.
            v1[nonzero] = dots[nonzero] / (norms[nonzero] * prev_norm)

    distances = np.sqrt(pairwise_squared_distances(rows))
    v2 = np.empty(n, dtype=np.float64)
    for i in range(n):
        others = np.delete(distances[i], i)
        # Eq. 8: k → i ranges over the N − f − 1 closest other updates.
        v2[i] = math.fsum(np.sort(others)[:nearest].tolist())

    v = _zscore(v1) - _zscore(v2)  # Eq. 9
    return v1, v2, v


@dataclass(frozen=True)
class QbflAggregator:
    """Alg. 2: keep the N − f − 2 best-scored updates (ties → lower id), stake-weighted mean (Eq. 10).

    Stakes ≤ 0 weigh 0 in the mean; if every selected stake is ≤ 0 the selected are averaged
    equally. Needs N ≥ f + 3 so that at least one update is kept.
    """

    name = "qbfl"

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
        _, _, v = qbfl_scores(inputs.rows, previous=inputs.previous, f=inputs.f)
        keep = inputs.n - inputs.f - 2
        # Alg. 2 line 6: keep the N − f − 2 largest v; rows are in id order, so ties → lower id.
        ranked = sorted(range(inputs.n), key=lambda i: (-v[i], i))
        chosen = sorted(ranked[:keep])
        weights = stake_weights(inputs.stakes[chosen])
        mean = weighted_mean(inputs.rows[chosen], weights)  # Eq. 10, accumulated in id order
        return AggregationResult(
            update=mean.astype(np.float32),
            selected=tuple(inputs.client_ids[i] for i in chosen),
        )
