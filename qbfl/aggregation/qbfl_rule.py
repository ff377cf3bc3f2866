"""The paper's aggregation rule (Alg. 2): score by direction and consistency, keep N − f − 2, stake-average."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from qbfl.aggregation.base import AggregationResult, canonical_inputs, require_clients
from qbfl.aggregation.median import coordinate_median
from qbfl.aggregation.summation import (
    ordered_sum,
    pairwise_squared_distances,
    row_dots,
    stake_weights,
    weighted_mean,
)
from qbfl.errors import ConfigError

__all__ = ["QbflAggregator", "coordinate_median", "qbfl_scores", "rank_candidates"]

# Eqs. 7–8 in float64 err by at most ~log2(P)·2⁻⁵³ of their own magnitude (ordered_sum folds in
# halves): ≤ 3e-15 for P = 10⁶. Values that agree to within 2⁻³² ≈ 2.3e-10 of their magnitude are
# equal as far as the computation can tell; a spread made only of such differences is rounding,
# not a difference between clients, and must not rank them (σ = 0 up to rounding → σ = 0).
ROUNDING_SPREAD = 2.0**-32


def _equal_up_to_rounding(low: float, high: float) -> bool:
    """True when ``low ≤ high`` differ by no more than rounding relative to their magnitude."""
    return high - low <= ROUNDING_SPREAD * max(abs(low), abs(high))


def _mean_sigma(values: np.ndarray) -> tuple[float, float]:
    """Eq. 9's location and scale: mean and population σ, with math.fsum (correctly rounded, so
    order-free); σ = 0 when it is zero up to rounding."""
    data = values.tolist()
    n = len(data)
    mu = math.fsum(data) / n
    sigma = math.sqrt(math.fsum((x - mu) * (x - mu) for x in data) / n)
    # σ = 0 up to rounding iff every value equals every other up to rounding (range test: one
    # outlier must not make the rest look equal, which a test relative to max|x| would).
    return mu, 0.0 if _equal_up_to_rounding(min(data), max(data)) else sigma


def _median(xs: list[float]) -> float:
    """Middle value of a sorted list (mean of the two middle ones for even length)."""
    mid = len(xs) // 2
    return xs[mid] if len(xs) % 2 else (xs[mid - 1] + xs[mid]) / 2.0


def _median_mad(values: np.ndarray) -> tuple[float, float]:
    """Median and 1.4826·MAD (σ of a normal distribution from its MAD); mean/σ when the MAD is 0.

    With the mean/σ of Eq. 9, a single update of norm 1e17 inflates σ(v2) so much that a second
    outlier of norm 1e12 scores like an honest update and can be kept (seen in a 200-round MNIST
    run, docs/aggregation.md). Median and MAD come from sorted lists: order-free, bit-exact. The
    MAD is 0 when more than half the values tie.
    """
    data = sorted(values.tolist())
    med = _median(data)
    mad = _median(sorted(abs(x - med) for x in data))
    # MAD = 0 up to rounding: more than half the values equal the median up to rounding.
    if mad <= ROUNDING_SPREAD * abs(med):
        return _mean_sigma(values)
    return med, 1.4826 * mad


@dataclass(frozen=True)
class Normalisation:
    """How Eq. 9 turns a score into a z-score: (x − location)/scale, scale 0 → z = 0.

    Only the scale matters for the ranking (the location shifts every candidate alike, see
    ``rank_candidates``); the location is there for the z-scores that are logged and shown.
    """

    parameters: Callable[[np.ndarray], tuple[float, float]]  # values → (location, scale)

    def scale(self, values: np.ndarray) -> float:
        return self.parameters(values)[1]

    def __call__(self, values: np.ndarray) -> np.ndarray:
        """The z-scores in float64, for display: they may tie where the exact ranking does not."""
        loc, scale = self.parameters(values)
        if scale == 0.0:
            return np.zeros(values.shape[0], dtype=np.float64)
        return np.array([(x - loc) / scale for x in values.tolist()], dtype=np.float64)


NORMALISATIONS: dict[str, Normalisation] = {
    "zscore": Normalisation(_mean_sigma),  # Eq. 9 as written
    "robust": Normalisation(_median_mad),  # beyond the paper: qbfl-robust
}


def rank_candidates(v1: np.ndarray, v2: np.ndarray, *, normalisation: str = "zscore") -> list[int]:
    """Indices ordered best first by Eq. 9's v = z(v1) − z(v2), compared exactly; ties → lower index.

    z(v1)_i − z(v2)_i = v1_i/σ1 − v2_i/σ2 − (μ1/σ1 − μ2/σ2): the last term is the same for every
    candidate, so v ranks exactly as v1_i/σ1 − v2_i/σ2, and (σ1, σ2 > 0) as v1_i·σ2 − v2_i·σ1. That
    key is compared in exact rational arithmetic (every float is a rational), so no subtraction
    can cancel: in float64, x − μ rounds every honest v2 to the same value as soon as one update
    of norm ~1e20 makes μ(v2) huge (issue 10, finding 10), and Eq. 9 would then rank by Eq. 7
    alone, or by id. σ = 0 (up to rounding) means the term tells no one apart and is dropped.
    Deterministic bit for bit: σ1, σ2 are order-free (fsum / sorted lists) and the rest is exact.
    """
    try:
        norm = NORMALISATIONS[normalisation]
    except KeyError:
        raise ConfigError(
            f"unknown normalisation {normalisation!r}; choose one of {sorted(NORMALISATIONS)}"
        ) from None
    s1, s2 = norm.scale(v1), norm.scale(v2)
    n = v1.shape[0]
    a = [Fraction(x) for x in v1.tolist()]
    b = [Fraction(x) for x in v2.tolist()]
    if s1 == 0.0 and s2 == 0.0:
        keys = [Fraction(0)] * n
    elif s1 == 0.0:
        keys = [-x for x in b]
    elif s2 == 0.0:
        keys = a
    else:
        f1, f2 = Fraction(s1), Fraction(s2)
        keys = [a[i] * f2 - b[i] * f1 for i in range(n)]
    return sorted(range(n), key=lambda i: (-keys[i], i))


REFERENCES = ("previous", "median", "none")


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
    median/MAD instead of mean/σ (beyond the paper, see _median_mad). v is rounded float64, for
    logs: one huge v2 can round every other z(v2) alike, so the rules rank with
    ``rank_candidates(v1, v2)``, which compares Eq. 9 exactly.
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

    def max_faults(self, n: int) -> int:
        """N ≥ f + 3: Alg. 2 line 6 keeps N − f − 2 ≥ 1 (Eq. 8 then has N − f − 1 ≥ 2 neighbours)."""
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
        v1, v2, _ = qbfl_scores(
            inputs.rows,
            previous=inputs.previous,
            f=inputs.f,
            normalisation=self.normalisation,
            reference=self.reference,
        )
        keep = inputs.n - inputs.f - 2
        # Alg. 2 line 6: keep the N − f − 2 largest v (Eq. 9 compared exactly, not the rounded v);
        # rows are in id order, so ties → lower id.
        ranked = rank_candidates(v1, v2, normalisation=self.normalisation)
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
