"""Eq. 9 must rank exactly, whatever the magnitudes (issue 10, finding 10).

In float64, z(v2) = (v2 − μ)/σ rounds every honest v2 to the same value once one legal float32
update of norm ~1e20 makes μ(v2) huge; the ranking then fell back to Eq. 7 or to id order and kept
both sign-flippers. A spread of v1 or v2 that is only rounding must not decide the ranking either.
"""

from __future__ import annotations

import mpmath
import numpy as np
import pytest

from qbfl.aggregation import get_aggregator
from qbfl.aggregation.qbfl_rule import qbfl_scores, rank_candidates

N, F, P = 10, 3, 32


def _one_huge_update(seed: int = 0) -> np.ndarray:
    """Issue 10's input: ids 0–1 = −c + noise, ids 2–8 = c + noise, id 9 = 1e20·c."""
    rng = np.random.default_rng(seed)
    c = rng.normal(size=P)
    rows = np.empty((N, P))
    rows[0:2] = -c + 0.1 * rng.normal(size=(2, P))
    rows[2:9] = c + 0.1 * rng.normal(size=(7, P))
    rows[9] = 1e20 * c
    updates = rows.astype(np.float32)
    assert np.isfinite(updates).all()  # a legal float32 update
    return updates


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("name", ["qbfl", "qbfl-distance", "qbfl-robust", "qbfl-median"])
def test_one_huge_update_does_not_blind_eq8(name: str, seed: int) -> None:
    updates = _one_huge_update(seed)
    rows = updates.astype(np.float64)
    dist = np.linalg.norm(rows[:, None, :] - rows[None, :, :], axis=2)
    v2 = np.array([np.sort(np.delete(dist[i], i))[: N - F - 1].sum() for i in range(N)])
    # First round: v1 ≡ 0, so exact Eq. 9 ranks by Eq. 8 alone: the 5 smallest distance sums.
    want = tuple(sorted(np.argsort(v2, kind="stable")[: N - F - 2].tolist()))
    assert set(want) <= set(range(2, 9))
    result = get_aggregator(name).aggregate(
        updates, client_ids=range(N), stakes=np.ones(N), f=F, previous=None
    )
    if name != "qbfl-median":  # its Eq. 7 uses this round's median: v1 is not 0
        assert result.selected == want
    assert not {0, 1, 9} & set(result.selected), result.selected


def _exact_eq9_order(v1: np.ndarray, v2: np.ndarray) -> list[int]:
    """Eq. 9 with 80-digit μ and σ (mpmath), as an independent reference."""
    mpmath.mp.dps = 80

    def z(values: np.ndarray) -> list[mpmath.mpf]:
        xs = [mpmath.mpf(float(x)) for x in values]
        mu = mpmath.fsum(xs) / len(xs)
        sigma = mpmath.sqrt(mpmath.fsum((x - mu) ** 2 for x in xs) / len(xs))
        return [(x - mu) / sigma if sigma else mpmath.mpf(0) for x in xs]

    v = [a - b for a, b in zip(z(v1), z(v2), strict=True)]
    return sorted(range(len(v)), key=lambda i: (-v[i], i))


@pytest.mark.parametrize("seed", range(20))
def test_ranking_equals_high_precision_eq9(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    n, p, f = 12, 24, 4
    previous = rng.normal(size=p)
    rows = previous + rng.normal(scale=1.0, size=(n, p))
    rows[rng.integers(n)] *= 10.0 ** rng.integers(3, 21)  # one update up to 1e20 times larger
    rows = rows.astype(np.float32).astype(np.float64)
    v1, v2, _ = qbfl_scores(rows, previous=previous, f=f)
    assert rank_candidates(v1, v2) == _exact_eq9_order(v1, v2)


def test_rounding_spread_of_v1_is_no_spread() -> None:
    # Every update a positive multiple of the previous direction: cos = 1 for all in exact
    # arithmetic, computed as 1 − k·2⁻⁵³ for varying k. That noise must not rank anyone; Eq. 8 must.
    rng = np.random.default_rng(1)
    c = rng.normal(size=4842).astype(np.float32)
    scale = rng.uniform(0.5, 3.0, size=12).astype(np.float32)
    updates = scale[:, None] * c[None, :]
    v1, v2, _ = qbfl_scores(updates, previous=c, f=4)
    assert len(set(v1.tolist())) > 1  # the rounding noise is there
    result = get_aggregator("qbfl").aggregate(
        updates, client_ids=range(12), stakes=np.ones(12), f=4, previous=c
    )
    assert result.selected == tuple(sorted(np.argsort(v2, kind="stable")[:6].tolist()))


def test_ranking_is_order_free_bit_for_bit() -> None:
    updates = _one_huge_update(3)
    perm = np.random.default_rng(5).permutation(N)
    ids = np.arange(N)
    rule = get_aggregator("qbfl")
    a = rule.aggregate(updates, client_ids=ids, stakes=np.ones(N), f=F, previous=updates[4])
    b = rule.aggregate(
        updates[perm], client_ids=ids[perm].tolist(), stakes=np.ones(N), f=F, previous=updates[4]
    )
    assert a.selected == b.selected
    assert a.update.tobytes() == b.update.tobytes()
