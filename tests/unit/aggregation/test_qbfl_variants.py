"""Alg. 2's direction score (Eq. 7) against bit-flippers near convergence, and the two variants
beyond the paper: `qbfl-median` (direction from the current round) and `qbfl-distance` (no Eq. 7).

Replays the pattern measured in a 200-round MNIST run with 15 bit-flippers (docs/aggregation.md):
honest updates share a small common part that points back against the previous global step (they
correct its overshoot), on top of larger client-specific parts; a flipper uploads −d."""

import numpy as np
import pytest

from qbfl.aggregation import get_aggregator
from qbfl.aggregation.qbfl_rule import coordinate_median, qbfl_scores
from qbfl.errors import ConfigError

N, F, P, BAD = 50, 20, 256, 15


def _overshoot_round(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    previous = rng.normal(size=P)
    previous /= np.linalg.norm(previous)
    common = -0.3 * previous + 0.2 * rng.normal(size=P) / np.sqrt(P)  # back against the last step
    updates = common + rng.normal(scale=1.0 / np.sqrt(P), size=(N, P))  # client parts, norm ~1
    updates[:BAD] *= -1.0  # bit-flip: upload −d
    return updates.astype(np.float32), previous.astype(np.float32)


def _flippers_kept(name: str, seed: int) -> int:
    updates, previous = _overshoot_round(seed)
    result = get_aggregator(name).aggregate(
        updates, client_ids=range(N), stakes=np.ones(N), f=F, previous=previous
    )
    assert len(result.selected) == N - F - 2
    return sum(i < BAD for i in result.selected)


def test_paper_direction_prefers_flippers_when_honest_updates_correct_an_overshoot() -> None:
    kept = [_flippers_kept("qbfl", seed) for seed in range(5)]
    assert min(kept) >= 10, kept  # most of the 15 flippers are among the 28 kept


def test_median_direction_keeps_no_flipper_in_the_same_rounds() -> None:
    kept = [_flippers_kept("qbfl-median", seed) for seed in range(5)]
    assert max(kept) <= 1, kept


def test_distance_only_keeps_few_flippers_in_the_same_rounds() -> None:
    # Eq. 8 alone sees only that −d sits a little farther from the honest cloud (‖d_i + d_k‖ >
    # ‖d_i − d_k‖ by the small common part): a few flippers slip in, not most of them.
    kept = [_flippers_kept("qbfl-distance", seed) for seed in range(5)]
    assert max(kept) <= 3 and sum(kept) <= 5, kept


def _label_flip_round(seed: int) -> np.ndarray:
    """Honest: small, diverse non-IID updates; flippers: larger updates pointing one (wrong) way."""
    rng = np.random.default_rng(seed)
    updates = rng.normal(scale=1.0 / np.sqrt(P), size=(N, P))
    wrong = rng.normal(size=P)
    updates[:BAD] += 1.5 * wrong / np.linalg.norm(wrong)
    return updates.astype(np.float32)


@pytest.mark.parametrize("name", ["qbfl", "qbfl-distance"])
def test_coherent_large_attackers_are_left_out(name: str) -> None:
    for seed in range(5):
        updates = _label_flip_round(seed)
        honest_mean = updates[BAD:].mean(axis=0)
        result = get_aggregator(name).aggregate(
            updates, client_ids=range(N), stakes=np.ones(N), f=F, previous=honest_mean
        )
        assert not [i for i in result.selected if i < BAD], (name, seed)


def test_distance_only_ranks_by_eq8_alone() -> None:
    updates, previous = _overshoot_round(3)
    rows = updates.astype(np.float64)
    v1, v2, v = qbfl_scores(rows, previous=previous, f=F, reference="none")
    assert not v1.any()
    np.testing.assert_array_equal(np.argsort(v, kind="stable"), np.argsort(-v2, kind="stable"))
    result = get_aggregator("qbfl-distance").aggregate(
        updates, client_ids=range(N), stakes=np.ones(N), f=F, previous=previous
    )
    assert list(result.selected) == sorted(np.argsort(v2, kind="stable")[: N - F - 2].tolist())


def test_median_reference_is_the_coordinate_median_and_order_free() -> None:
    updates, previous = _overshoot_round(1)
    rows = updates.astype(np.float64)
    np.testing.assert_array_equal(coordinate_median(rows), np.median(rows, axis=0))
    perm = np.random.default_rng(2).permutation(N)
    a = qbfl_scores(rows, previous=previous, f=F, reference="median")[2]
    b = qbfl_scores(rows[perm], previous=previous, f=F, reference="median")[2]
    np.testing.assert_array_equal(a[perm], b)  # bit for bit, whatever the arrival order


def test_unknown_reference_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="reference"):
        qbfl_scores(np.zeros((5, 3)), previous=None, f=1, reference="mean")
