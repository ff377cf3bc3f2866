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


def _robust_zscore(values: np.ndarray) -> np.ndarray:
    """(x − median)/(1.4826·MAD): a z-score that one huge outlier cannot stretch.

    With the mean/σ of Eq. 9, a single update of norm 1e17 inflates σ(v2) so much that a second
    outlier of norm 1e12 scores like an honest update and can be kept (seen in a 200-round MNIST
    run, docs/aggregation.md). Median and MAD come from sorted lists: order-free, bit-exact.
    Falls back to the plain z-score when the MAD is 0 (more than half the values tie).
    """
    data = sorted(values.tolist())

    def median(xs: list[float]) -> float:
        mid = len(xs) // 2
        return xs[mid] if len(xs) % 2 else (xs[mid - 1] + xs[mid]) / 2.0

    med = median(data)
    mad = median(sorted(abs(x - med) for x in data))
    if mad == 0.0:
        return _zscore(values)
    scale = 1.4826 * mad  # σ of a normal distribution from its MAD
    return np.array([(x - med) / scale for x in values.tolist()], dtype=np.float64)


NORMALISATIONS = {"zscore": _zscore, "robust": _robust_zscore}
REFERENCES = ("previous", "median", "none")


def coordinate_median(rows: np.ndarray) -> np.ndarray:
    """Per coordinate the middle value (mean of the two middle ones for even N): sort-based, exact."""
    ordered = np.sort(rows, axis=0)
    n = rows.shape[0]
    return (ordered[(n - 1) // 2] + ordered[n // 2]) / 2.0


def qbfl_scores(
    updates: np.ndarray,
    *,
    previous: np.ndarray | None,
    f: int,
    normalisation: str = "zscore",
    reference: str = "previous",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Alg. 2 lines 1–5 for each row: (v1, v2, v), each (N,) float64.

    v1(i) = cos(d_i, previous) (Eq. 7); 0 when previous is None or zero (first round) or d_i is zero.
    `reference="median"` (beyond the paper) takes the direction from this round's coordinate-wise
    median update instead of the previous global update (see QbflMedianAggregator);
    `reference="none"` drops Eq. 7 (v1 = 0), so v ranks by Eq. 8 alone (QbflDistanceAggregator).
    v2(i) = Σ of Euclidean distances to the N − f − 1 nearest other rows (Eq. 8).
    v(i)  = z(v1)(i) − z(v2)(i) (Eq. 9), z over all candidates; `normalisation="robust"` uses
    median/MAD instead of mean/σ (beyond the paper, see _robust_zscore).
    Permutation-equivariant bit for bit: row i's values depend only on the multiset of rows.
    """
    try:
        normalise = NORMALISATIONS[normalisation]
    except KeyError:
        raise ConfigError(
            f"unknown normalisation {normalisation!r}; choose one of {sorted(NORMALISATIONS)}"
        ) from None
    if reference not in REFERENCES:
        raise ConfigError(f"unknown reference {reference!r}; choose one of {REFERENCES}")
    rows = np.ascontiguousarray(updates, dtype=np.float64)
    n = rows.shape[0]
    nearest = n - f - 1
    if f < 0 or nearest < 1:
        raise ConfigError(f"qbfl needs N ≥ f + 2 rows to score; got N = {n} with f = {f}")
    if reference == "median":
        previous = coordinate_median(rows)
    elif reference == "none":
        previous = None

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

    v = normalise(v1) - normalise(v2)  # Eq. 9
    return v1, v2, v


@dataclass(frozen=True)
class QbflAggregator:
    """Alg. 2: keep the N − f − 2 best-scored updates (ties → lower id), stake-weighted mean (Eq. 10).

    Stakes ≤ 0 weigh 0 in the mean; if every selected stake is ≤ 0 the selected are averaged
    equally. Needs N ≥ f + 3 so that at least one update is kept.
    """

    name = "qbfl"
    normalisation = "zscore"  # Eq. 9 as written
    reference = "previous"  # Eq. 7 as written: the previous round's global update

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
        _, _, v = qbfl_scores(
            inputs.rows,
            previous=inputs.previous,
            f=inputs.f,
            normalisation=self.normalisation,
            reference=self.reference,
        )
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


@dataclass(frozen=True)
class RobustQbflAggregator(QbflAggregator):
    """Alg. 2 with Eq. 9's z-scores taken over median/MAD, so one huge update cannot mask another."""

    name = "qbfl-robust"
    normalisation = "robust"


@dataclass(frozen=True)
class QbflMedianAggregator(QbflAggregator):
    """Alg. 2 with Eq. 7's direction taken from this round's coordinate-wise median update.

    Near convergence an honest update tends to point back against the previous global step (it
    corrects the overshoot), so cos(d_i, d̄^{t−1}) turns negative for honest clients and positive
    for bit-flipped ones (−d_i); Alg. 2 then keeps the flippers, the next global step points
    their way, and the loop feeds itself (measured: docs/aggregation.md). The median of the
    current updates points where the honest majority points, with no memory of earlier rounds.
    The price: coherent, large attacker updates (label flipping) pull the median their way, and
    this variant does worse than the paper's rule there (docs/aggregation.md).
    """

    name = "qbfl-median"
    reference = "median"


@dataclass(frozen=True)
class QbflDistanceAggregator(QbflAggregator):
    """Alg. 2 without Eq. 7: keep the N − f − 2 updates with the smallest Eq. 8 distance sums.

    With v1 ≡ 0, z(v1) = 0 and v = −z(v2) ranks exactly as −v2, so this is Multi-Krum with
    Euclidean (not squared) distances over the N − f − 1 nearest, stake-weighted (Eq. 10).
    Measured on MNIST (docs/aggregation.md): it keeps the bit-flippers out where Eq. 7's
    direction lets them in, and the label flippers out as well as the paper's rule does.
    """

    name = "qbfl-distance"
    reference = "none"
