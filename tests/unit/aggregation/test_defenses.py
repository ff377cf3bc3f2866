"""Multi-Krum, Bulyan, geometric median, centered clipping and NNM against plain references,
their robustness to gross outliers, and their errors (issue 13, item 2)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qbfl.aggregation import get_aggregator, krum_scores
from qbfl.aggregation.geomed import GeometricMedian
from qbfl.aggregation.nnm import nearest_neighbour_mix
from qbfl.errors import ConfigError

PROPS = settings(max_examples=25, deadline=None, derandomize=True)


def _round(n: int = 15, p: int = 20, seed: int = 0) -> tuple[np.ndarray, list[int], np.ndarray]:
    rng = np.random.default_rng(seed)
    updates = rng.normal(size=(n, p)).astype(np.float32)
    return updates, [int(i) for i in rng.permutation(100)[:n]], np.ones(n)


def _canonical(updates: np.ndarray, ids: list[int]) -> tuple[np.ndarray, list[int]]:
    order = np.argsort(ids)
    return updates[order].astype(np.float64), sorted(ids)


def test_multi_krum_averages_the_m_best_krum_scores() -> None:
    updates, ids, stakes = _round()
    rows, sorted_ids = _canonical(updates, ids)
    f = 4
    scores = krum_scores(rows, f=f)
    best = sorted(np.argsort(scores, kind="stable")[: 15 - f].tolist())
    out = get_aggregator("multi-krum").aggregate(
        updates, client_ids=ids, stakes=stakes, f=f, previous=None
    )
    assert out.selected == tuple(sorted_ids[i] for i in best)
    np.testing.assert_allclose(out.update, rows[best].mean(axis=0), rtol=1e-6)
    three = get_aggregator("multi-krum", m=3).aggregate(
        updates, client_ids=ids, stakes=stakes, f=f, previous=None
    )
    assert len(three.selected) == 3 and set(three.selected) <= set(out.selected)


def _bulyan_reference(rows: np.ndarray, f: int) -> tuple[list[int], np.ndarray]:
    n = rows.shape[0]
    sq = ((rows[:, None, :] - rows[None, :, :]) ** 2).sum(axis=2)
    left, chosen = list(range(n)), []
    while len(chosen) < n - 2 * f:
        k = max(len(left) - f - 2, 1)
        score = {i: np.sort([sq[i, j] for j in left if j != i])[:k].sum() for i in left}
        best = min(left, key=lambda i: (score[i], i))
        left.remove(best)
        chosen.append(best)
    chosen.sort()
    sel = rows[chosen]
    beta = len(chosen) - 2 * f
    med = np.median(sel, axis=0)
    idx = np.argsort(np.abs(sel - med), axis=0, kind="stable")[:beta]
    return chosen, np.take_along_axis(sel, idx, axis=0).mean(axis=0)


@pytest.mark.parametrize(("n", "f"), [(15, 3), (11, 2), (7, 1), (3, 0), (19, 4)])
def test_bulyan_matches_a_plain_reference(n: int, f: int) -> None:
    updates, ids, stakes = _round(n=n, seed=n)
    rows, sorted_ids = _canonical(updates, ids)
    chosen, want = _bulyan_reference(rows, f)
    out = get_aggregator("bulyan").aggregate(
        updates, client_ids=ids, stakes=stakes, f=f, previous=None
    )
    assert out.selected == tuple(sorted_ids[i] for i in chosen)
    np.testing.assert_allclose(out.update, want, rtol=1e-6, atol=1e-7)


def test_bulyan_needs_4f_plus_3() -> None:
    updates, ids, stakes = _round(n=14)
    with pytest.raises(ConfigError, match=r"N ≥ 4f \+ 3.*N = 14 with f = 3"):
        get_aggregator("bulyan").aggregate(
            updates, client_ids=ids, stakes=stakes, f=3, previous=None
        )


def test_geomed_minimises_the_sum_of_distances() -> None:
    updates, ids, stakes = _round(n=12, p=6, seed=3)
    rows, _ = _canonical(updates, ids)
    out = get_aggregator("geomed").aggregate(
        updates, client_ids=ids, stakes=stakes, f=0, previous=None
    )
    z = out.update.astype(np.float64)
    objective = np.linalg.norm(rows - z, axis=1).sum()
    rng = np.random.default_rng(0)
    for _ in range(200):  # no nearby point does better (up to float32 rounding of z)
        probe = z + rng.normal(scale=1e-3, size=z.shape)
        assert np.linalg.norm(rows - probe, axis=1).sum() >= objective - 1e-6
    # Weiszfeld's fixed point: the unit vectors towards the updates cancel.
    pull = ((rows - z) / np.linalg.norm(rows - z, axis=1)[:, None]).sum(axis=0)
    assert np.linalg.norm(pull) < 1e-3


def test_geomed_matches_byzfl_style_iteration_from_zero() -> None:
    updates, _, _ = _round(n=10, p=5, seed=4)
    rows = updates.astype(np.float64)
    z = np.zeros(5)
    for _ in range(3):  # ByzFL's GeometricMedian(nu=0.1, T=3), written out
        beta = 1.0 / np.maximum(np.linalg.norm(rows - z, axis=1), 0.1)
        z = (rows * beta[:, None]).sum(axis=0) / beta.sum()
    ours = GeometricMedian(nu=0.1, iterations=3, tol=0.0, start="zero").solve(rows)
    np.testing.assert_allclose(ours, z, rtol=1e-12)


def test_cclip_with_a_fixed_radius_is_the_papers_update() -> None:
    updates, ids, stakes = _round(n=9, p=7, seed=5)
    rows, _ = _canonical(updates, ids)
    prev = np.random.default_rng(1).normal(size=7).astype(np.float32)
    v = prev.astype(np.float64)
    for _ in range(2):
        diff = rows - v
        norms = np.linalg.norm(diff, axis=1)
        v = v + (diff * np.minimum(1.0, 0.5 / norms)[:, None]).mean(axis=0)
    out = get_aggregator("cclip", tau=0.5, iterations=2).aggregate(
        updates, client_ids=ids, stakes=stakes, f=0, previous=prev
    )
    np.testing.assert_allclose(out.update, v, rtol=1e-6)


def test_nnm_mixes_each_row_with_its_nearest() -> None:
    updates, _, _ = _round(n=8, p=4, seed=6)
    rows = updates.astype(np.float64)
    dist = np.linalg.norm(rows[:, None] - rows[None], axis=2)
    want = np.stack([rows[np.argsort(dist[i], kind="stable")[:5]].mean(axis=0) for i in range(8)])
    np.testing.assert_allclose(nearest_neighbour_mix(rows, f=3), want, rtol=1e-12)


def test_nnm_with_f_zero_in_front_of_fedavg_is_fedavg() -> None:
    updates, ids, stakes = _round()
    a = get_aggregator("nnm+fedavg").aggregate(
        updates, client_ids=ids, stakes=stakes, f=0, previous=None
    )
    b = get_aggregator("fedavg").aggregate(
        updates, client_ids=ids, stakes=stakes, f=0, previous=None
    )
    np.testing.assert_allclose(a.update, b.update, rtol=1e-6)
    assert get_aggregator("nnm+qbfl").name == "nnm+qbfl"


def test_bad_names_and_options_are_clear_errors() -> None:
    for name in ("nnm+nnm+qbfl", "nnm+", "nnm+foo"):
        with pytest.raises(ValueError, match="unknown aggregator"):
            get_aggregator(name)
    for name, options in [
        ("geomed", {"nu": -1.0}),
        ("geomed", {"start": "somewhere"}),
        ("geomed", {"iterations": 0}),
        ("cclip", {"tau": 0.0}),
        ("cclip", {"iterations": 0}),
        ("multi-krum", {"m": 0}),
    ]:
        with pytest.raises(ConfigError):
            get_aggregator(name, **options)
    updates, ids, stakes = _round(n=5)
    with pytest.raises(ConfigError, match="m = 6"):
        get_aggregator("multi-krum", m=6).aggregate(
            updates, client_ids=ids, stakes=stakes, f=0, previous=None
        )
    with pytest.raises(ConfigError, match=r"nnm\+median needs N ≥ f \+ 1"):
        get_aggregator("nnm+median").aggregate(
            updates, client_ids=ids, stakes=stakes, f=5, previous=None
        )


@st.composite
def attacked_rounds(draw: st.DrawFn) -> dict:
    """Honest rows around a common direction, ≤ f gross outliers (|x| ≥ 100), N ≥ 4f + 3."""
    f = draw(st.integers(0, 4))
    n = draw(st.integers(4 * f + 3, 4 * f + 10))
    p = draw(st.integers(2, 16))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    honest = rng.uniform(-1.0, 1.0, size=(n, p))
    bad = rng.choice(n, size=draw(st.integers(0, f)), replace=False)
    for i in bad:
        honest[i] = rng.choice([-1.0, 1.0], size=p) * rng.uniform(100.0, 1e6, size=p)
    return {"n": n, "f": f, "p": p, "updates": honest.astype(np.float32), "bad": set(bad.tolist())}


@PROPS
@given(r=attacked_rounds(), name=st.sampled_from(["multi-krum", "bulyan", "nnm+krum"]))
def test_selection_rules_keep_no_gross_outlier(r: dict, name: str) -> None:
    ids = list(range(r["n"]))
    out = get_aggregator(name).aggregate(
        r["updates"], client_ids=ids, stakes=np.ones(r["n"]), f=r["f"], previous=None
    )
    honest = np.delete(r["updates"], sorted(r["bad"]), axis=0)
    if name != "nnm+krum":  # a mixed row is a mean over N − f rows, an outlier among them
        assert not set(out.selected) & r["bad"]
    assert np.all(out.update >= honest.min(axis=0) - 1e-6)
    assert np.all(out.update <= honest.max(axis=0) + 1e-6)


@PROPS
@given(r=attacked_rounds(), name=st.sampled_from(["geomed", "cclip"]))
def test_averaging_rules_stay_near_the_honest_rows(r: dict, name: str) -> None:
    """Gross outliers move fedavg by ~1e5; these stay within a few honest spreads.

    Geometric median (Minsker 2015): with a fraction α < 1/2 of outliers, its distance to any
    point c is at most (2(1 − α)/(1 − 2α))·max over honest ‖x_i − c‖. Centered clipping
    (median radius, 3 steps from 0): each step moves at most by the median radius, which the
    honest majority fixes, so it ends within 3 honest diameters of the origin.
    """
    ids = list(range(r["n"]))
    out = get_aggregator(name).aggregate(
        r["updates"], client_ids=ids, stakes=np.ones(r["n"]), f=r["f"], previous=None
    )
    honest = np.delete(r["updates"], sorted(r["bad"]), axis=0).astype(np.float64)
    center = honest.mean(axis=0)
    radius = float(np.linalg.norm(honest - center, axis=1).max())
    if name == "geomed":
        alpha = len(r["bad"]) / r["n"]
        bound = 2 * (1 - alpha) / (1 - 2 * alpha) * radius
        assert np.linalg.norm(out.update - center) <= bound * 1.01 + 1e-4
    else:
        diameter = 2 * float(np.linalg.norm(honest, axis=1).max())
        assert np.linalg.norm(out.update) <= 3 * diameter + 1e-6
