"""Colluding attacks that craft their updates from the round's other updates (ALIE, IPM, Min-Max, Min-Sum, adaptive on Alg. 2).

The per-client attacks of `qbfl.learning.attacks` (labelflip, bitflip, gaussian, random) need only
the attacker's own data and update, so every networked node can run them alone. The attacks here
are applied after honest training, to all malicious clients at once: each sees a reference set of
updates (`RoundView.reference`) and returns one vector per malicious client. What that reference
is, is the attack's knowledge:

- `Knowledge.OMNISCIENT`: the honest updates of this round (the literature's default and ByzFL's;
  in a network it needs a rushing adversary that reads the honest uploads before sending its own);
- `Knowledge.COLLUDERS`: only the malicious clients' own honestly trained updates, pooled among
  them (Baruch et al.'s and Shejwalkar & Houmansadr's partial-knowledge setting; in a network it
  needs a side channel between the malicious nodes, which the node runtime does not offer).

Every malicious client sends the same crafted vector (as in the papers): identical vectors are
what lets the colluders look mutually close. All arithmetic is float64 numpy on the attacker's
side; no consensus determinism is needed, only reproducibility (no randomness is used).
"""

from __future__ import annotations

import enum
import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from qbfl.aggregation.summation import pairwise_squared_distances
from qbfl.errors import ConfigError


class Knowledge(enum.Enum):
    """Which updates a colluding attack sees before crafting its own."""

    OMNISCIENT = "omniscient"  # every honest update of the round
    COLLUDERS = "colluders"  # the malicious clients' own honestly trained updates


@dataclass(frozen=True)
class RoundView:
    """What the colluders know in one round."""

    reference: np.ndarray  # (K, P) float64: the updates the attack's knowledge grants
    n_inputs: int  # N: updates the aggregator will see (honest + malicious)
    n_malicious: int  # M: vectors to craft
    f: int  # the fault tolerance the aggregator uses
    previous: np.ndarray | None  # the previous global update (public: it is in the last block)
    round: int

    def __post_init__(self) -> None:
        if self.reference.ndim != 2 or self.reference.shape[0] < 1:
            raise ConfigError(
                f"a colluding attack needs at least one reference update, got {self.reference.shape}"
            )
        if not 0 < self.n_malicious < self.n_inputs:
            raise ConfigError(
                f"need 0 < malicious < inputs, got {self.n_malicious} of {self.n_inputs}"
            )


class ColludingAttack(Protocol):
    """An attack that crafts every malicious update of a round at once from a `RoundView`."""

    @property
    def name(self) -> str: ...

    @property
    def knowledge(self) -> Knowledge: ...

    def craft(self, view: RoundView) -> np.ndarray:
        """(M, P) float32: the update each malicious client sends this round."""
        ...


def _mean_std(reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = reference.mean(axis=0)
    # Sample std (ddof = 1) as ByzFL's ALIE; one reference update has no spread.
    std = reference.std(axis=0, ddof=1) if reference.shape[0] > 1 else np.zeros_like(mean)
    return mean, std


def _unit(v: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(v))
    return v / norm if norm > 0 else np.zeros_like(v)


def _copies(vector: np.ndarray, m: int) -> np.ndarray:
    return np.tile(vector.astype(np.float32), (m, 1))


def alie_z(n: int, m: int) -> float:
    """Baruch et al.'s z_max: s = ⌊N/2 + 1⌋ − M honest workers must be out-voted, z = Φ⁻¹((N − s)/N)."""
    s = max(math.floor(n / 2 + 1) - m, 1)
    p = min((n - s) / n, 1 - 1e-9)
    return statistics.NormalDist().inv_cdf(p) if p > 0.5 else 0.0


@dataclass(frozen=True)
class ALittleIsEnough:
    """ALIE (Baruch, Baruch & Goldberg, NeurIPS 2019): μ + z·σ per coordinate.

    μ, σ: mean and sample std of the reference updates; z = `alie_z(N, M)` unless given (1.175 at
    N = 50, M = 20). Small per-coordinate shifts, inside the spread of honest values, that
    coordinate-wise rules (median, trimmed mean) and distance rules (Krum) cannot tell from
    honest ones, yet all pull the same way. Baruch et al. estimate μ, σ from the attackers'
    own data (`Knowledge.COLLUDERS`); ByzFL's `ALittleIsEnough(tau)` is this with z = tau.
    """

    z: float | None = None
    knowledge: Knowledge = Knowledge.OMNISCIENT
    name: str = "alie"

    def craft(self, view: RoundView) -> np.ndarray:
        mean, std = _mean_std(view.reference)
        z = self.z if self.z is not None else alie_z(view.n_inputs, view.n_malicious)
        return _copies(mean + z * std, view.n_malicious)


@dataclass(frozen=True)
class InnerProductManipulation:
    """IPM (Xie, Koyejo & Gupta, UAI 2019, "Fall of empires"): −ε·μ.

    Small ε (0.1) keeps the malicious vectors near the honest ones and makes the aggregate's
    inner product with the true gradient negative for rules that average what they keep; large ε
    (100) is a gross, obvious outlier that distance-based rules drop. Same as ByzFL's
    `InnerProductManipulation(tau=ε)`.
    """

    epsilon: float = 0.1
    knowledge: Knowledge = Knowledge.OMNISCIENT
    name: str = "ipm"

    def craft(self, view: RoundView) -> np.ndarray:
        return _copies(-self.epsilon * view.reference.mean(axis=0), view.n_malicious)


def _deviation(kind: str, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """Shejwalkar & Houmansadr's perturbation directions ∇p (the malicious vector is μ + γ·∇p)."""
    if kind == "std":
        return -std
    if kind == "unit-vec":
        return -_unit(mean)
    if kind == "sign":
        return -np.sign(mean)
    raise ConfigError(f"unknown deviation {kind!r}; choose std, unit-vec or sign")


def _largest_gamma(ok: Callable[[float], bool], *, start: float = 10.0, tol: float = 1e-5) -> float:
    """Their search for the largest γ with ok(γ): steps start/2, start/4, … from `start` (so γ
    can reach 0 or 2·start), 0 if none passes; ends when γ is within `tol` of the last pass."""
    gamma, step, best = start, start, 0.0
    while abs(best - gamma) > tol:
        if ok(gamma):
            best = gamma
            gamma += step / 2
        else:
            gamma -= step / 2
        step /= 2
    return best


@dataclass(frozen=True)
class MinMax:
    """Min-Max (Shejwalkar & Houmansadr, NDSS 2021, AGR-agnostic): μ + γ·∇p with the largest γ
    such that the malicious vector is no farther from any reference update than the two farthest
    reference updates are from each other: max_i ‖m − h_i‖ ≤ max_{i,j} ‖h_i − h_j‖.

    ∇p = −σ ("inverse std", the paper's strongest choice in most of its experiments).
    """

    deviation: str = "std"
    knowledge: Knowledge = Knowledge.OMNISCIENT
    name: str = "minmax"

    def craft(self, view: RoundView) -> np.ndarray:
        ref = view.reference
        mean, std = _mean_std(ref)
        grad = _deviation(self.deviation, mean, std)
        bound = float(np.sqrt(pairwise_squared_distances(ref).max()))

        def ok(gamma: float) -> bool:
            m = mean + gamma * grad
            return float(np.sqrt(((ref - m) ** 2).sum(axis=1)).max()) <= bound

        return _copies(mean + _largest_gamma(ok) * grad, view.n_malicious)


@dataclass(frozen=True)
class MinSum:
    """Min-Sum (Shejwalkar & Houmansadr, NDSS 2021, AGR-agnostic): as Min-Max, with the largest γ
    such that Σ_i ‖m − h_i‖² ≤ max_i Σ_j ‖h_i − h_j‖² (no more squared distance in total than the
    most remote reference update has)."""

    deviation: str = "std"
    knowledge: Knowledge = Knowledge.OMNISCIENT
    name: str = "minsum"

    def craft(self, view: RoundView) -> np.ndarray:
        ref = view.reference
        mean, std = _mean_std(ref)
        grad = _deviation(self.deviation, mean, std)
        bound = float(pairwise_squared_distances(ref).sum(axis=1).max())

        def ok(gamma: float) -> bool:
            m = mean + gamma * grad
            return float(((ref - m) ** 2).sum()) <= bound

        return _copies(mean + _largest_gamma(ok) * grad, view.n_malicious)


def _zscore(x: np.ndarray) -> np.ndarray:
    sigma = float(x.std())
    return (x - x.mean()) / sigma if sigma > 0 else np.zeros_like(x)


@dataclass(frozen=True)
class Alg2Adaptive:
    """An adaptive attack on Alg. 2: colluders who know Eqs. 7–9, f and the previous global update.

    All M colluders send m = μ + γ·u. For each direction u in a fixed set and each γ on a
    geometric grid (10⁻² … 10² times the reference spread), the attacker scores every update with
    Eqs. 7–9 as a committee member would (v1 = cos to the previous global update, v2 = distances
    to the N − f − 1 nearest, v = z(v1) − z(v2)), keeps the N − f − 2 best (ties → honest first,
    the attacker assumes the worst), averages them, and sends the (u, γ) whose aggregate lands
    farthest from μ. Directions: away from μ (−μ̂), inverse std (−σ̂), inverse sign, along the
    previous global step (+p̂: raises Eq. 7's cosine), and p̂ − μ̂ (both). Why it works on Alg. 2:
    M identical vectors are at distance 0 from each other, so their v2 sums only the N − f − 1 − (M − 1)
    nearest honest distances, and a vector aligned with p̂ wins Eq. 7; both make a large γ look
    good. It is Shejwalkar & Houmansadr's "AGR-tailored" recipe (maximise the damage subject to
    being kept) written for Alg. 2. The attacker computes in float64 numpy (it need not be
    bit-exact, only reproducible); it weighs the kept updates equally (stakes barely move the mean).
    """

    knowledge: Knowledge = Knowledge.OMNISCIENT
    name: str = "adaptive"
    grid: int = 41

    def _directions(
        self, mean: np.ndarray, std: np.ndarray, prev: np.ndarray | None
    ) -> list[np.ndarray]:
        dims = mean.shape[0]
        out = [-_unit(mean), -_unit(std), -np.sign(mean) / math.sqrt(dims)]
        if prev is not None and float(np.linalg.norm(prev)) > 0:
            p = _unit(prev)
            out += [p, _unit(p - _unit(mean))]
        return [u for u in out if float(np.linalg.norm(u)) > 0]

    def craft(self, view: RoundView) -> np.ndarray:
        ref = view.reference
        h, m_count, n, f = ref.shape[0], view.n_malicious, view.n_inputs, view.f
        mean, std = _mean_std(ref)
        keep = n - f - 2
        nearest = n - f - 1
        if keep < 1 or nearest < 1:  # Alg. 2 cannot run: fall back to the strongest guess
            return _copies(mean - 10 * std, m_count)
        known = h + m_count  # the candidates the attackers can score: all N when omniscient
        if known < n:
            # Partial knowledge (`colluders`): the known rows stand in for the honest clients in
            # a committee of the same proportions (the N − f − 2 kept and N − f − 1 nearest
            # scaled to it); scoring them as if they were all N would keep fewer rows than
            # Alg. 2 keeps and misjudge every candidate.
            keep = max(1, round(keep * known / n))
            nearest = max(1, min(known - 1, round(nearest * known / n)))
        hh = np.sqrt(pairwise_squared_distances(ref))  # (H, H)
        centred = ref - mean
        spread = float(np.sqrt((centred**2).sum(axis=1).mean())) or 1.0
        prev = view.previous.astype(np.float64) if view.previous is not None else None
        p_norm = float(np.linalg.norm(prev)) if prev is not None else 0.0
        honest_cos = (
            ref @ prev / (np.linalg.norm(ref, axis=1) * p_norm + 1e-300)
            if prev is not None and p_norm > 0
            else np.zeros(h)
        )
        sq_centred = (centred**2).sum(axis=1)
        best_damage, best = -1.0, mean
        for u in self._directions(mean, std, prev):
            proj = centred @ u
            uu = float(u @ u)
            for gamma in spread * np.logspace(-2, 2, self.grid):
                m = mean + gamma * u
                # ‖h − m‖² = ‖h − μ‖² − 2γ(h − μ)·u + γ²‖u‖², clipped at 0 against rounding
                dist = np.sqrt(np.maximum(sq_centred - 2 * gamma * proj + gamma**2 * uu, 0.0))
                v2_h = np.empty(h)
                for i in range(h):
                    row = np.concatenate([np.delete(hh[i], i), np.repeat(dist[i], m_count)])
                    v2_h[i] = np.sort(row)[:nearest].sum()
                mal_row = np.concatenate([np.zeros(m_count - 1), dist])
                v2_m = np.sort(mal_row)[:nearest].sum()
                if prev is not None and p_norm > 0:
                    cos_m = float(m @ prev) / (float(np.linalg.norm(m)) * p_norm + 1e-300)
                else:
                    cos_m = 0.0
                v1 = np.concatenate([honest_cos, np.full(m_count, cos_m)])
                v2 = np.concatenate([v2_h, np.full(m_count, v2_m)])
                v = _zscore(v1) - _zscore(v2)
                # ties: honest first (index order puts them first; a stable sort keeps it)
                kept = np.argsort(-v, kind="stable")[:keep]
                n_mal = int((kept >= h).sum())
                agg = (ref[kept[kept < h]].sum(axis=0) + n_mal * m) / len(kept)
                damage = float(np.linalg.norm(agg - mean))
                if damage > best_damage:
                    best_damage, best = damage, m
        return _copies(best, m_count)


COLLUDING_ATTACKS: dict[str, Callable[[Knowledge], ColludingAttack]] = {
    "alie": lambda k: ALittleIsEnough(knowledge=k),
    "ipm": lambda k: InnerProductManipulation(epsilon=0.1, knowledge=k),
    "ipm-large": lambda k: InnerProductManipulation(epsilon=100.0, knowledge=k, name="ipm-large"),
    "minmax": lambda k: MinMax(knowledge=k),
    "minsum": lambda k: MinSum(knowledge=k),
    "adaptive": lambda k: Alg2Adaptive(knowledge=k),
}


def get_colluding_attack(
    name: str, *, knowledge: Knowledge = Knowledge.OMNISCIENT
) -> ColludingAttack:
    """The colluding attack registered under `name`, seeing what `knowledge` grants."""
    if name not in COLLUDING_ATTACKS:
        raise ValueError(
            f"unknown colluding attack {name!r}; valid: {', '.join(sorted(COLLUDING_ATTACKS))}"
        )
    return COLLUDING_ATTACKS[name](knowledge)
