"""Each aggregation rule against a plain reference, plus registry and input validation."""

from __future__ import annotations

import numpy as np
import pytest

from qbfl.aggregation import (
    AGGREGATORS,
    AggregationResult,
    get_aggregator,
    krum_scores,
    ordered_sum,
    pairwise_squared_distances,
    qbfl_scores,
)
from qbfl.errors import ConfigError, InvalidUpdate

RULES = sorted(AGGREGATORS)


def _round(n: int = 9, p: int = 13, seed: int = 0) -> tuple[np.ndarray, list[int], np.ndarray]:
    rng = np.random.default_rng(seed)
    updates = rng.normal(0.0, 0.1, size=(n, p)).astype(np.float32)
    ids = [int(i) for i in rng.permutation(100)[:n]]
    stakes = rng.integers(1, 6, size=n).astype(np.float64)
    return updates, ids, stakes


def test_registry_names_are_the_agreed_ones() -> None:
    assert set(AGGREGATORS) == {
        "fedavg", "trimmed-mean", "median", "krum", "qbfl", "qbfl-robust", "qbfl-median",
        "qbfl-distance", "multi-krum", "bulyan", "geomed", "cclip",
    }  # fmt: skip
    for name in RULES:
        assert get_aggregator(name).name == name


def test_unknown_aggregator_lists_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="fedavg.*krum.*median.*qbfl.*trimmed-mean"):
        get_aggregator("fedprox")


def test_unknown_option_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="does not take options"):
        get_aggregator("krum", multi=3)


def test_ordered_sum_matches_fsum_closely_and_handles_odd_lengths() -> None:
    rng = np.random.default_rng(1)
    for k in (1, 2, 3, 7, 8, 1000, 4842):
        x = rng.normal(size=(3, k))
        got = ordered_sum(x)
        want = np.array([np.float64(sum(sorted(r.tolist()))) for r in x])
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_pairwise_distances_match_linalg_and_are_symmetric() -> None:
    rng = np.random.default_rng(2)
    rows = rng.normal(size=(6, 31))
    d = pairwise_squared_distances(rows)
    want = ((rows[:, None, :] - rows[None, :, :]) ** 2).sum(axis=2)
    np.testing.assert_allclose(d, want, rtol=1e-12)
    assert np.array_equal(d, d.T)
    assert np.all(np.diag(d) == 0)


def test_fedavg_is_the_mean_of_all() -> None:
    updates, ids, stakes = _round()
    out = get_aggregator("fedavg").aggregate(
        updates, client_ids=ids, stakes=stakes, f=2, previous=None
    )
    np.testing.assert_allclose(out.update, updates.astype(np.float64).mean(axis=0), rtol=1e-6)
    assert out.selected == tuple(sorted(ids))
    assert out.update.dtype == np.float32


def test_trimmed_mean_drops_f_from_each_end() -> None:
    updates, ids, stakes = _round(n=9)
    f = 3
    out = get_aggregator("trimmed-mean").aggregate(
        updates, client_ids=ids, stakes=stakes, f=f, previous=None
    )
    want = np.sort(updates.astype(np.float64), axis=0)[f:-f].mean(axis=0)
    np.testing.assert_allclose(out.update, want, rtol=1e-6)


@pytest.mark.parametrize("n", [7, 8])
def test_median_matches_numpy(n: int) -> None:
    updates, ids, stakes = _round(n=n)
    out = get_aggregator("median").aggregate(
        updates, client_ids=ids, stakes=stakes, f=2, previous=None
    )
    np.testing.assert_array_equal(
        out.update, np.median(updates.astype(np.float64), axis=0).astype(np.float32)
    )


def test_krum_scores_and_choice_match_a_reference() -> None:
    updates, ids, stakes = _round(n=9)
    f = 3
    rows = updates.astype(np.float64)
    sq = ((rows[:, None, :] - rows[None, :, :]) ** 2).sum(axis=2)
    want = np.array([np.sort(np.delete(sq[i], i))[: 9 - f - 2].sum() for i in range(9)])
    np.testing.assert_allclose(krum_scores(rows, f=f), want, rtol=1e-12)
    out = get_aggregator("krum").aggregate(
        updates, client_ids=ids, stakes=stakes, f=f, previous=None
    )
    best = int(np.argmin(want))
    assert out.selected == (ids[best],)
    assert np.array_equal(out.update, updates[best])


def test_qbfl_scores_match_the_paper_formulas() -> None:
    updates, _, _ = _round(n=10, p=17)
    rng = np.random.default_rng(3)
    prev = rng.normal(size=17)
    f = 3
    v1, v2, v = qbfl_scores(updates, previous=prev, f=f)
    rows = updates.astype(np.float64)
    cos = rows @ prev / (np.linalg.norm(rows, axis=1) * np.linalg.norm(prev))
    dist = np.linalg.norm(rows[:, None, :] - rows[None, :, :], axis=2)
    sums = np.array([np.sort(np.delete(dist[i], i))[: 10 - f - 1].sum() for i in range(10)])
    np.testing.assert_allclose(v1, cos, rtol=1e-12)
    np.testing.assert_allclose(v2, sums, rtol=1e-12)
    z = lambda x: (x - x.mean()) / x.std()  # noqa: E731
    np.testing.assert_allclose(v, z(cos) - z(sums), rtol=1e-9, atol=1e-12)


def test_qbfl_first_round_scores_direction_zero() -> None:
    updates, _, _ = _round(n=8)
    for prev in (None, np.zeros(updates.shape[1])):
        v1, _, _ = qbfl_scores(updates, previous=prev, f=2)
        assert np.all(v1 == 0.0)


def test_qbfl_equal_scores_break_ties_to_lower_ids() -> None:
    # Every update identical: all v equal (σ = 0 → z = 0), so the N−f−2 lowest ids are kept.
    updates = np.ones((8, 5), dtype=np.float32)
    ids = [17, 3, 11, 5, 2, 40, 8, 9]
    out = get_aggregator("qbfl").aggregate(
        updates, client_ids=ids, stakes=np.ones(8), f=2, previous=None
    )
    assert out.selected == (2, 3, 5, 8)


def test_qbfl_stake_weighted_mean_is_eq_10() -> None:
    updates, ids, stakes = _round(n=10, p=7)
    out = get_aggregator("qbfl").aggregate(
        updates, client_ids=ids, stakes=stakes, f=3, previous=None
    )
    assert len(out.selected) == 10 - 3 - 2
    rows = [ids.index(c) for c in out.selected]
    want = np.average(updates[rows].astype(np.float64), axis=0, weights=stakes[rows])
    np.testing.assert_allclose(out.update, want, rtol=1e-6)


def test_qbfl_negative_stakes_weigh_nothing_and_all_nonpositive_average_equally() -> None:
    updates = np.array([[1.0], [2.0], [3.0], [4.0], [5.0]], dtype=np.float32)
    ids = [0, 1, 2, 3, 4]
    rule = get_aggregator("qbfl")
    # f = 0 keeps N − 2 = 3 rows; all identical directions (previous None), v2 decides: 2, 3, 4
    # are the most central -> ids 1, 2, 3.
    out = rule.aggregate(
        updates, client_ids=ids, stakes=np.array([1, 2, -5, 0, 1]), f=0, previous=None
    )
    assert out.selected == (1, 2, 3)
    assert out.update[0] == pytest.approx(2.0)
    out = rule.aggregate(
        updates, client_ids=ids, stakes=np.array([1, -2, 0, -1, 1]), f=0, previous=None
    )
    assert out.update[0] == pytest.approx(3.0)


@pytest.mark.parametrize("name", RULES)
def test_nan_and_inf_are_rejected_naming_the_client(name: str) -> None:
    updates, ids, stakes = _round()
    for bad in (np.nan, np.inf, -np.inf):
        broken = updates.copy()
        broken[4, 2] = bad
        with pytest.raises(InvalidUpdate, match=f"NaN or Inf.*{ids[4]}"):
            get_aggregator(name).aggregate(
                broken, client_ids=ids, stakes=stakes, f=2, previous=None
            )


@pytest.mark.parametrize("name", RULES)
def test_bad_shapes_and_inputs_are_rejected(name: str) -> None:
    updates, ids, stakes = _round()
    rule = get_aggregator(name)
    cases = [
        dict(updates=updates[0], client_ids=ids, stakes=stakes, previous=None),
        dict(updates=updates, client_ids=ids[:-1], stakes=stakes, previous=None),
        dict(updates=updates, client_ids=[1] * len(ids), stakes=stakes, previous=None),
        dict(updates=updates, client_ids=ids, stakes=stakes[:-1], previous=None),
        dict(updates=updates, client_ids=ids, stakes=stakes, previous=np.zeros(3)),
        dict(updates=updates, client_ids=ids, stakes=stakes, previous=np.full(13, np.nan)),
        dict(updates=updates.astype(np.int32), client_ids=ids, stakes=stakes, previous=None),
    ]
    for case in cases:
        with pytest.raises(InvalidUpdate):
            rule.aggregate(
                case["updates"],
                client_ids=case["client_ids"],
                stakes=case["stakes"],
                f=2,
                previous=case["previous"],
            )
    with pytest.raises(ValueError, match="f must be"):
        rule.aggregate(updates, client_ids=ids, stakes=stakes, f=-1, previous=None)


@pytest.mark.parametrize(
    ("name", "n", "f", "need"),
    [("trimmed-mean", 6, 3, "2f \\+ 1"), ("krum", 5, 3, "f \\+ 3"), ("qbfl", 5, 3, "f \\+ 3")],
)
def test_too_few_clients_for_f_says_what_is_needed(name: str, n: int, f: int, need: str) -> None:
    updates, ids, stakes = _round(n=n)
    with pytest.raises(ConfigError, match=f"N ≥ {need}.*N = {n} with f = {f}"):
        get_aggregator(name).aggregate(updates, client_ids=ids, stakes=stakes, f=f, previous=None)


def test_result_is_frozen() -> None:
    res = AggregationResult(update=np.zeros(2, dtype=np.float32), selected=(1,))
    with pytest.raises(AttributeError):
        res.selected = (2,)  # type: ignore[misc]


@pytest.mark.parametrize("name", RULES)
def test_negative_zero_is_canonicalised(name: str) -> None:
    # A sort may order −0.0 and +0.0 either way; canonical rows hold only +0.0, so no sign bit.
    updates = np.array([[-0.0, 1.0]] * 3 + [[0.0, 1.0]] * 2, dtype=np.float32)
    f = min(1, get_aggregator(name).max_faults(5))
    out = get_aggregator(name).aggregate(
        updates, client_ids=[4, 0, 3, 1, 2], stakes=np.ones(5), f=f, previous=None
    )
    assert not np.signbit(out.update).any()
