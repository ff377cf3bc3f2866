"""Our attacks beside ByzFL 0.0.11's on identical honest updates (issue 13, item 3).

Same tolerance as tests/unit/aggregation/test_byzfl_agreement.py: 1e-6 × the largest input
magnitude (or of the output, when it is larger, as IPM's ε = 100; ours returns float32). Definitional differences are pinned, not hidden.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from qbfl.bench.byzfl_modules import ByzflUnavailable, load_byzfl
from qbfl.learning.attacks import BitFlip, LabelFlip
from qbfl.learning.collusion import (
    ALittleIsEnough,
    InnerProductManipulation,
    RoundView,
    get_colluding_attack,
)

pytestmark = pytest.mark.byzfl

try:
    ATT = load_byzfl().attacks
except ByzflUnavailable:  # pragma: no cover - the dev setup installs it
    pytest.skip("byzfl is not installed (scripts/setup.sh installs it)", allow_module_level=True)


def _honest(seed: int, h: int = 30, p: int = 50) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (
        (rng.normal(size=p) + rng.normal(scale=0.5, size=(h, p)))
        .astype(np.float32)
        .astype(np.float64)
    )


def _view(honest: np.ndarray, m: int = 20) -> RoundView:
    return RoundView(
        reference=honest, n_inputs=len(honest) + m, n_malicious=m, f=m, previous=None, round=0
    )


def _close(ours: np.ndarray, theirs: np.ndarray, scale: np.ndarray) -> None:
    largest = max(float(np.abs(scale).max()), float(np.abs(theirs).max()))
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-6 * largest)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("tau", [0.5, 1.5, 3.0])
def test_alie_agrees_at_the_same_z(seed: int, tau: float) -> None:
    """ByzFL's `tau` is Baruch et al.'s z; our default computes z from N and M (1.175 at 50/20)."""
    honest = _honest(seed)
    ours = ALittleIsEnough(z=tau).craft(_view(honest))
    theirs = ATT.ALittleIsEnough(tau=tau)(honest)
    for row in ours:
        _close(row, theirs, honest)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("epsilon", [0.1, 2.0, 100.0])
def test_ipm_agrees(seed: int, epsilon: float) -> None:
    honest = _honest(seed)
    ours = InnerProductManipulation(epsilon=epsilon).craft(_view(honest))
    _close(ours[0], ATT.InnerProductManipulation(tau=epsilon)(honest), honest)
    if epsilon in (0.1, 100.0):  # our registry's ipm and ipm-large
        name = "ipm" if epsilon == 0.1 else "ipm-large"
        _close(get_colluding_attack(name).craft(_view(honest))[0], ours[0], honest)


def test_sign_flipping_differs_in_what_it_flips() -> None:
    """ByzFL's SignFlipping sends −mean(honest) (omniscient); our `bitflip` (the paper's, Section
    5.1) sends −d of the attacker's own update. Equal when the attacker's update is the only one
    it sees; ByzFL's is our IPM at ε = 1."""
    honest = _honest(3)
    own = honest[:1]
    flipped = BitFlip().poison_update(
        torch.from_numpy(own[0]), round=0, generator=torch.Generator().manual_seed(0)
    )
    _close(flipped.numpy(), ATT.SignFlipping()(own), own)
    _close(
        InnerProductManipulation(epsilon=1.0).craft(_view(honest))[0],
        ATT.SignFlipping()(honest),
        honest,
    )


def test_label_flipping_maps_labels_alike() -> None:
    """ByzFL flips targets as −(t − (L − 1)) in `fed_framework/client.py` (that module imports
    torchvision, so its formula is restated here); ours relabels class i as 9 − i."""
    labels = torch.arange(10).repeat(3)
    byzfl_style = labels.sub(10 - 1).mul(-1)
    ours = LabelFlip().poison_labels(labels, round=0, generator=torch.Generator().manual_seed(0))
    assert torch.equal(ours, byzfl_style)


def test_gaussian_differs_by_definition() -> None:
    """ByzFL's Gaussian(mu, sigma) replaces the update by N(mu, σ²) noise; ours (Section 5.1)
    sends d + N(0, 0.1²). Only ByzFL's shape and scale are checked: the generators differ."""
    honest = _honest(4, h=5, p=20000)
    np.random.seed(0)  # ByzFL draws from numpy's global generator
    noise = ATT.Gaussian(mu=0.0, sigma=0.1)(honest)
    assert noise.shape == (20000,)
    assert abs(float(noise.std()) - 0.1) < 0.005 and abs(float(noise.mean())) < 0.005


def test_attacks_only_we_have_are_named() -> None:
    """Min-Max, Min-Sum (Shejwalkar & Houmansadr) and the adaptive attack on Alg. 2 have no
    ByzFL 0.0.11 counterpart; its Optimal_* variants, Mimic and Inf have none here."""
    for missing in ("MinMax", "MinSum"):
        assert not hasattr(ATT, missing)
    assert hasattr(ATT, "Optimal_ALittleIsEnough") and hasattr(ATT, "Mimic")
