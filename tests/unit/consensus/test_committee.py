"""Alg. 1 committee selection: determinism, candidates and ties, views, stake-proportional draws, edge cases."""

from __future__ import annotations

import random
from collections import Counter
from fractions import Fraction

import blake3
import pytest

from qbfl.consensus.committee import (
    Committee,
    committee_candidates,
    committee_seed,
    select_committee,
)

HASH = blake3.blake3(b"block 41").digest()
EQUAL = {i: 10 for i in range(50)}


def _hashes(count: int, seed: bytes = b"seed-set-1") -> list[bytes]:
    return [blake3.blake3(seed + i.to_bytes(4, "big")).digest() for i in range(count)]


def test_committee_shape_and_leader_first() -> None:
    c = select_committee(HASH, EQUAL, size=5)
    assert isinstance(c, Committee)
    assert c.leader == c.members[0]
    assert len(c.members) == len(set(c.members)) == 5
    assert set(c.members) <= set(EQUAL)
    assert c.view == 0


def test_known_answer_pins_the_rules() -> None:
    # Pins the exact rules (seed, v = (int(h)+1)/2^256, id order): changing any of them breaks
    # agreement with nodes already running, so it must show up here.
    c = select_committee(HASH, {0: 1, 1: 1, 2: 1, 3: 1}, size=2)
    h1 = blake3.blake3(HASH).digest()
    first = ((int.from_bytes(h1, "big") + 1) * 4 - 1) >> 256  # index with w_{i-1} < v ≤ w_i
    assert c.leader == first


def _alg1_reference(seed: bytes, stakes: dict[int, int], size: int) -> list[int]:
    """Alg. 1 read straight off the paper, in exact rationals (positive stakes only)."""
    ranked = sorted(stakes.values(), reverse=True)
    cut = ranked[min(2 * size, len(ranked)) - 1]
    candidates = sorted(c for c, s in stakes.items() if s >= cut)  # top 2·Nc, ties kept, by id
    total = sum(stakes[c] for c in candidates)
    picked: list[int] = []
    h = seed
    while len(picked) < size:
        h = blake3.blake3(h).digest()
        v = Fraction(int.from_bytes(h, "big") + 1, 2**256)
        acc = 0
        for c in candidates:
            acc += stakes[c]
            if v <= Fraction(acc, total):  # w_{i-1} < v <= w_i
                break
        if c not in picked:
            picked.append(c)
    return picked


def test_whole_committees_match_a_reference_alg1_on_unequal_stakes() -> None:
    rng = random.Random(5)
    for trial in range(200):
        n = rng.randrange(6, 40)
        stakes = {i: rng.randrange(1, 30) for i in range(n)}
        size = rng.randrange(1, min(n, 8) + 1)
        block = blake3.blake3(b"block" + trial.to_bytes(4, "big")).digest()
        view = rng.randrange(3)
        want = _alg1_reference(committee_seed(block, view), stakes, size)
        got = select_committee(block, stakes, size=size, view=view)
        assert list(got.members) == want, (trial, stakes, size, view)


def test_same_inputs_give_the_same_committee_on_every_node() -> None:
    stakes = {i: 5 + (i * 7) % 11 for i in range(30)}
    reordered = dict(reversed(list(stakes.items())))  # a node may hold its map in another order
    a = select_committee(HASH, stakes, size=5, view=2)
    b = select_committee(bytes(bytearray(HASH)), reordered, size=5, view=2)
    assert a == b


def test_different_hashes_usually_give_different_committees() -> None:
    committees = {select_committee(h, EQUAL, size=5).members for h in _hashes(50)}
    assert len(committees) >= 45


def test_view_change_redraws_and_view_zero_starts_from_the_block_hash() -> None:
    assert committee_seed(HASH, 0) == HASH
    assert committee_seed(HASH, 1) == blake3.blake3(HASH + (1).to_bytes(8, "big")).digest()
    views = [select_committee(HASH, EQUAL, size=5, view=v) for v in range(6)]
    assert [c.view for c in views] == list(range(6))
    assert len({c.members for c in views}) == 6


def test_candidates_are_top_two_size_with_ties_at_the_cut() -> None:
    stakes = {9: 50, 3: 40, 7: 30, 1: 20, 5: 20, 2: 20, 8: 10, 4: 5}
    # size 2 → top 4: 50, 40, 30, then the 20s tie at the cut → all three included.
    assert committee_candidates(stakes, 2) == (1, 2, 3, 5, 7, 9)
    assert committee_candidates(stakes, 1) == (3, 9)
    assert committee_candidates(stakes, 4) == tuple(sorted(stakes))
    for h in _hashes(30):
        members = select_committee(h, stakes, size=2).members
        assert set(members) <= {1, 2, 3, 5, 7, 9}


def test_draw_frequency_is_stake_proportional() -> None:
    # Leader frequency over 4 000 fixed hashes for stakes 1:2:3:4 (all candidates, size 2).
    stakes = {10: 1, 20: 2, 30: 3, 40: 4}
    counts = Counter(select_committee(h, stakes, size=2).leader for h in _hashes(4000))
    for cid, stake in stakes.items():
        expected = 4000 * stake / 10
        # ±5 binomial standard deviations: generous, still rejects uniform or reversed weights.
        sd = (4000 * (stake / 10) * (1 - stake / 10)) ** 0.5
        assert abs(counts[cid] - expected) < 5 * sd, (cid, counts[cid], expected)


def test_zero_and_negative_stakes_are_never_drawn_while_others_weigh() -> None:
    stakes = {0: 0, 1: -3, 2: 7, 3: 7, 4: -1, 5: 7}
    for h in _hashes(200):
        c = select_committee(h, stakes, size=2)
        assert set(c.members) <= {2, 3, 5}


def test_zero_weight_candidates_fill_the_rest_and_terminate() -> None:
    stakes = {0: 0, 1: -3, 2: 7, 3: -2}
    for h in _hashes(100):
        c = select_committee(h, stakes, size=4)
        assert c.leader == 2  # the only positive stake leads
        assert sorted(c.members) == [0, 1, 2, 3]


def test_all_nonpositive_stakes_fall_back_to_equal_weights() -> None:
    stakes = {i: -i for i in range(6)}  # candidates: top 4 are 0, −1, −2, −3
    leaders = Counter(select_committee(h, stakes, size=2).leader for h in _hashes(800))
    assert set(leaders) == {0, 1, 2, 3}
    assert min(leaders.values()) > 800 / 4 * 0.7


def test_huge_stake_disparity_still_terminates() -> None:
    stakes = {0: 10**12, 1: 1, 2: 1}
    c = select_committee(HASH, stakes, size=3)
    assert c.leader == 0 and sorted(c.members) == [0, 1, 2]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"size": 0}, "size must be"),
        ({"size": 51}, "exceeds the number of clients"),
        ({"size": 5, "view": -1}, "view must be"),
        ({"size": 5, "view": 1 << 64}, "view must be"),
    ],
)
def test_validation_errors(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        select_committee(HASH, EQUAL, **kwargs)


def test_bad_hash_and_stake_types_are_rejected() -> None:
    with pytest.raises(ValueError, match="last_block_hash"):
        select_committee(b"", EQUAL, size=3)
    with pytest.raises(ValueError, match="stakes must be integers"):
        select_committee(HASH, {0: 1.5, 1: 2, 2: 3}, size=2)  # type: ignore[dict-item]
