"""Stake-based committee selection (Alg. 1): every node derives the same committee from the chain alone."""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from dataclasses import dataclass

import blake3

# v is compared against the cumulative weights in exact integer arithmetic: v = (int(h) + 1)/2^256
# lies in (0, 1] as Alg. 1 line 6 requires (int(h)/2^256 could be exactly 0 and then match nobody).
_HASH_SPACE = 1 << 256
# After this many consecutive draws that land only on already-picked candidates, the remaining
# draws are made among the unpicked candidates alone (same distribution as rejection, bounded time).
# With integer stakes the chance to ever get here is below (1 − 1/Σs)^65536.
MAX_IDLE_DRAWS = 1 << 16
MAX_VIEW = (1 << 64) - 1


@dataclass(frozen=True)
class Committee:
    """The committee of one (round, view): the leader is the first pick."""

    leader: int
    members: tuple[int, ...]  # leader first, then in pick order
    view: int


def committee_seed(last_block_hash: bytes, view: int) -> bytes:
    """The hash chain's starting point: the block hash for view 0, blake3(hash ∥ view_be64) after.

    DESIGN §5 step 5: a failed view draws the next committee by hashing on (view + 1).
    """
    if view == 0:
        return bytes(last_block_hash)
    return blake3.blake3(bytes(last_block_hash) + view.to_bytes(8, "big")).digest()


def committee_candidates(stakes: Mapping[int, int], size: int) -> tuple[int, ...]:
    """The top 2·size clients by stake, every client tied with the cut included, ordered by id (§4.2)."""
    ranked = sorted(stakes.values(), reverse=True)
    if len(ranked) <= 2 * size:
        return tuple(sorted(stakes))
    cut = ranked[2 * size - 1]
    return tuple(sorted(cid for cid, stake in stakes.items() if stake >= cut))


def _cumulative(candidates: tuple[int, ...], stakes: Mapping[int, int]) -> list[int]:
    """Integer numerators of Eq. 5 (w_i · Σs): stakes ≤ 0 weigh 0; all ≤ 0 → equal weights."""
    weights = [max(stakes[c], 0) for c in candidates]
    if sum(weights) == 0:
        weights = [1] * len(candidates)
    cumulative, running = [], 0
    for w in weights:
        running += w
        cumulative.append(running)
    return cumulative


def _pick(cumulative: list[int], digest: bytes) -> int:
    """Index i with w_{i−1} < v ≤ w_i for v = (int(h) + 1)/2^256, compared exactly in integers."""
    total = cumulative[-1]
    scaled_v = (int.from_bytes(digest, "big") + 1) * total  # v·Σs·2^256
    for i, cum in enumerate(cumulative):
        if scaled_v <= cum * _HASH_SPACE:
            return i
    return len(cumulative) - 1  # unreachable: v ≤ 1 = w_M


def _validate(stakes: Mapping[int, int], size: int, view: int, last_block_hash: bytes) -> None:
    if not isinstance(last_block_hash, bytes | bytearray) or not last_block_hash:
        raise ValueError("last_block_hash must be non-empty bytes")
    if not isinstance(size, numbers.Integral) or isinstance(size, bool) or size < 1:
        raise ValueError(f"committee size must be an integer ≥ 1, got {size!r}")
    if size > len(stakes):
        raise ValueError(f"committee size {size} exceeds the number of clients ({len(stakes)})")
    if (
        not isinstance(view, numbers.Integral)
        or isinstance(view, bool)
        or not 0 <= view <= MAX_VIEW
    ):
        raise ValueError(f"view must be an integer in [0, 2^64), got {view!r}")
    for cid, stake in stakes.items():
        if not isinstance(cid, numbers.Integral) or isinstance(cid, bool):
            raise ValueError(f"client ids must be integers, got {cid!r}")
        if not isinstance(stake, numbers.Integral) or isinstance(stake, bool):
            raise ValueError(f"stakes must be integers, got {stake!r} for client {cid}")


def select_committee(
    last_block_hash: bytes, stakes: Mapping[int, int], *, size: int, view: int = 0
) -> Committee:
    """Alg. 1: draw ``size`` distinct members from the candidates by repeated blake3 of the block hash.

    Rules (docs/aggregation.md, "Committee selection"): candidates = top 2·size by stake with ties
    at the cut, ordered by id; weights = max(stake, 0), or equal when all are ≤ 0; h ← blake3(h)
    before each draw; a draw on an already-picked candidate is skipped (Alg. 1 line 8); when the
    unpicked candidates all weigh 0, or after MAX_IDLE_DRAWS skipped draws in a row, draws continue
    among the unpicked only (their own weights, or equal ones if those are all 0).
    """
    _validate(stakes, size, view, last_block_hash)
    table = {int(cid): int(stake) for cid, stake in stakes.items()}
    candidates = committee_candidates(table, size)
    pool = candidates
    cumulative = _cumulative(pool, table)
    picked: list[int] = []
    h = committee_seed(bytes(last_block_hash), int(view))
    idle = 0
    narrowed = False
    any_weight = any(table[c] > 0 for c in candidates)
    while len(picked) < size:  # Alg. 1 line 4
        # Termination: when the unpicked candidates weigh nothing (while others do), or after
        # MAX_IDLE_DRAWS skipped draws in a row, draw among the unpicked only from here on.
        if not narrowed and (
            idle >= MAX_IDLE_DRAWS
            or (idle == 0 and any_weight and all(table[c] <= 0 for c in pool if c not in picked))
        ):
            narrowed = True
            pool = tuple(c for c in candidates if c not in picked)
            cumulative = _cumulative(pool, table)
        h = blake3.blake3(h).digest()  # Alg. 1 line 5
        choice = pool[_pick(cumulative, h)]  # lines 6–8
        if choice in picked:
            idle += 1
            continue
        picked.append(choice)  # line 9
        idle = 0
        if narrowed:
            pool = tuple(c for c in pool if c != choice)
            if pool:
                cumulative = _cumulative(pool, table)
    return Committee(leader=picked[0], members=tuple(picked), view=int(view))
