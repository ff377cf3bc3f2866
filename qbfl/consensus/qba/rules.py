"""The gathering rules of both QBA modes as pure functions: majority (A2–A4), pair views, operation counts."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from math import perm


def majority(values: Iterable[bytes | None]) -> bytes | None:
    """App. A.2 majority: the most frequent recorded value; ⊥ (None) entries are not values.

    Tie rule (the paper leaves it open): a tie for the top count, or no value at all, gives ⊥.
    """
    counts = Counter(v for v in values if v is not None)
    if not counts:
        return None
    ranked = counts.most_common(2)
    if len(ranked) == 2 and ranked[0][1] == ranked[1][1]:
        return None
    return ranked[0][0]


def paper_qds_operations(n: int, f: int) -> int:
    """Eq. (A1): N_QDS = Σ_{m=0}^{f−1} A_{N−1}^{2+m}."""
    return sum(perm(n - 1, 2 + m) for m in range(f))


def detectable_qds_operations(n: int) -> int:
    """Round 1 only: A_{N−1}^2 ordered (Bob, Charlie) pairs."""
    return perm(n - 1, 2)


def verifier_operations(n: int, f: int, *, paper: bool) -> int:
    """Operations of one session in which a given non-leader member is Bob or Charlie.

    The most a peer can make it check, hold state for and draw keys for (docs/qba.md, "Bounds"):
    round r has A_{N−2}^{r−1} paths (leader first) without the member, and on each the member is Bob
    with N − r − 1 possible Charlies, or Charlie with as many Bobs. Detectable mode: 2(N − 2).
    """
    rounds = f if paper else 1
    return 2 * sum(perm(n - 2, r - 1) * (n - r - 1) for r in range(1, rounds + 1))


def gather_paper(
    *,
    me: int,
    committee: Sequence[int],
    f: int,
    received: Mapping[tuple[int, ...], Sequence[bytes]],
    relayed: Mapping[tuple[int, ...], bytes | None],
) -> bytes | None:
    """App. A.2 gathering in reverse order (A2–A4) for member `me`.

    received[P]: values `me` recorded from the last primary of path P (as Bob or Charlie).
    relayed[P]: what `me` sent as primary along P+(me) — its own entry in the list L_P (A3).
    """

    def gathered(path: tuple[int, ...]) -> bytes | None:
        if len(path) == f:
            return majority(received.get(path, ()))  # A2
        members = [k for k in committee if k not in path and k != me]
        entries = [gathered(path + (k,)) for k in members]
        entries.append(relayed.get(path))  # A3: "the message he sends when acting as the primary"
        return majority(entries)

    return gathered((committee[0],))  # A4


def pair_view(values: Iterable[bytes | None]) -> bytes | None:
    """DESIGN §6 detectable mode: the single value the pair's triples carry; ⊥ for none or two different."""
    distinct = {v for v in values if v is not None}
    return distinct.pop() if len(distinct) == 1 else None


def detectable_output(views: Mapping[int, bytes | None]) -> bytes | None:
    """v if every pair view is v, else ⊥."""
    distinct = set(views.values())
    if len(distinct) == 1:
        return distinct.pop()
    return None
