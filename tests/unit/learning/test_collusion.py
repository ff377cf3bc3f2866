"""Colluding attacks (ALIE, IPM, Min-Max, Min-Sum, adaptive on Alg. 2) against their definitions."""

from __future__ import annotations

import numpy as np
import pytest

from qbfl.aggregation import get_aggregator
from qbfl.errors import ConfigError
from qbfl.learning.collusion import (
    COLLUDING_ATTACKS,
    Knowledge,
    RoundView,
    alie_z,
    get_colluding_attack,
)

H, M, P = 30, 20, 64


def _view(seed: int = 0, previous: bool = True) -> RoundView:
    rng = np.random.default_rng(seed)
    direction = rng.normal(size=P)
    honest = 0.3 * direction + rng.normal(size=(H, P))
    prev = (0.3 * direction + 0.1 * rng.normal(size=P)) if previous else None
    return RoundView(reference=honest, n_inputs=H + M, n_malicious=M, f=20, previous=prev, round=5)


def test_alie_is_mean_plus_z_std_with_baruchs_z() -> None:
    # N = 50, M = 20: s = ⌊26⌋ − 20 = 6 must be out-voted, z = Φ⁻¹(44/50) = 1.175
    assert alie_z(50, 20) == pytest.approx(1.1749867, abs=1e-6)
    view = _view()
    out = get_colluding_attack("alie").craft(view)
    mean, std = view.reference.mean(axis=0), view.reference.std(axis=0, ddof=1)
    assert out.shape == (M, P) and out.dtype == np.float32
    np.testing.assert_allclose(out[0], mean + alie_z(50, 20) * std, rtol=1e-6)
    assert (out == out[0]).all()  # every colluder sends the same vector


@pytest.mark.parametrize(("name", "epsilon"), [("ipm", 0.1), ("ipm-large", 100.0)])
def test_ipm_is_minus_epsilon_mean(name: str, epsilon: float) -> None:
    view = _view()
    out = get_colluding_attack(name).craft(view)
    np.testing.assert_allclose(out[0], -epsilon * view.reference.mean(axis=0), rtol=1e-6)


def _dist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.linalg.norm(a[:, None, :] - b[None, :, :], axis=2)


def test_minmax_takes_the_largest_gamma_within_the_honest_diameter() -> None:
    view = _view(1)
    ref = view.reference
    mean, std = ref.mean(axis=0), ref.std(axis=0, ddof=1)
    m = get_colluding_attack("minmax").craft(view)[0].astype(np.float64)
    bound = _dist(ref, ref).max()
    assert _dist(m[None], ref).max() <= bound * (1 + 1e-6)
    gamma = float(np.linalg.norm(m - mean) / np.linalg.norm(std))
    assert gamma > 0.5  # it found a real deviation
    further = mean - (gamma + 1e-3) * std
    assert _dist(further[None], ref).max() > bound  # and no larger γ passes


def test_minsum_takes_the_largest_gamma_within_the_honest_sum() -> None:
    view = _view(2)
    ref = view.reference
    mean, std = ref.mean(axis=0), ref.std(axis=0, ddof=1)
    m = get_colluding_attack("minsum").craft(view)[0].astype(np.float64)
    bound = (_dist(ref, ref) ** 2).sum(axis=1).max()
    assert (_dist(m[None], ref) ** 2).sum() <= bound * (1 + 1e-6)
    gamma = float(np.linalg.norm(m - mean) / np.linalg.norm(std))
    further = mean - (gamma + 1e-3) * std
    assert (_dist(further[None], ref) ** 2).sum() > bound


@pytest.mark.parametrize("previous", [True, False])
def test_adaptive_attack_gets_kept_by_alg2_and_pulls_it_away(previous: bool) -> None:
    view = _view(3, previous)
    crafted = get_colluding_attack("adaptive").craft(view)
    updates = np.concatenate([view.reference, crafted]).astype(np.float32)
    prev = None if view.previous is None else view.previous.astype(np.float32)
    ids = list(range(H + M))
    rule = get_aggregator("qbfl")
    attacked = rule.aggregate(updates, client_ids=ids, stakes=np.ones(H + M), f=20, previous=prev)
    assert any(i >= H for i in attacked.selected)  # colluders are kept by the real rule
    mean = view.reference.mean(axis=0)
    # … and move the aggregate much farther from the honest mean than ALIE-free honesty would
    honest = updates.copy()
    honest[H:] = view.reference[:M]
    clean = rule.aggregate(honest, client_ids=ids, stakes=np.ones(H + M), f=20, previous=prev)
    assert np.linalg.norm(attacked.update - mean) > 3 * np.linalg.norm(clean.update - mean)


def test_adaptive_attack_with_partial_knowledge_scores_a_committee_of_the_same_proportions() -> (
    None
):
    # `colluders`: the reference is the 20 attackers' own updates, not the 30 honest ones. The
    # attack must score them as a 40-candidate committee with Alg. 2's proportions (keep 22,
    # nearest 23: exactly an omniscient view of N = 40, f = 16), not as N = 50 (keep 28 of only
    # 40 rows, the aggregate divided by 28).
    rng = np.random.default_rng(7)
    direction = rng.normal(size=P)
    own = 0.3 * direction + rng.normal(size=(M, P))
    prev = 0.3 * direction + 0.1 * rng.normal(size=P)
    adaptive = get_colluding_attack("adaptive", knowledge="colluders")
    partial = RoundView(reference=own, n_inputs=50, n_malicious=M, f=20, previous=prev, round=5)
    same = RoundView(reference=own, n_inputs=40, n_malicious=M, f=16, previous=prev, round=5)
    assert np.array_equal(adaptive.craft(partial), adaptive.craft(same))
    # few attackers (5 of 50): 10 known rows, fewer than the 43 Alg. 2 keeps at N = 50

    few = RoundView(reference=own[:5], n_inputs=50, n_malicious=5, f=5, previous=prev, round=5)
    crafted = adaptive.craft(few)
    assert np.isfinite(crafted).all() and crafted.shape == (5, P)


def test_attacks_are_deterministic_and_registered() -> None:
    assert set(COLLUDING_ATTACKS) == {"alie", "ipm", "ipm-large", "minmax", "minsum", "adaptive"}
    view = _view(4)
    for name in COLLUDING_ATTACKS:
        a = get_colluding_attack(name).craft(view)
        b = get_colluding_attack(name).craft(view)
        assert a.tobytes() == b.tobytes()
        assert np.isfinite(a).all()
        assert get_colluding_attack(name, knowledge=Knowledge.COLLUDERS).knowledge is (
            Knowledge.COLLUDERS
        )
    with pytest.raises(ValueError, match="unknown colluding attack"):
        get_colluding_attack("lie")


def test_a_view_without_honest_inputs_is_refused() -> None:
    with pytest.raises(ConfigError):
        RoundView(
            reference=np.zeros((0, 3)), n_inputs=5, n_malicious=2, f=1, previous=None, round=0
        )
    with pytest.raises(ConfigError):
        RoundView(
            reference=np.zeros((2, 3)), n_inputs=5, n_malicious=5, f=1, previous=None, round=0
        )
