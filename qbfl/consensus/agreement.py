"""The round's view of QBA: one session per (round, view) on the committee, over qbfl.consensus.qba."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol


class QbaSession(Protocol):
    """One member's QBA run for one (round, view), driven by the round state machine.

    Outgoing messages are (recipient, payload) pairs; the round wraps them in QbaEnvelope.
    Multicast rounds are lock-step: the round ends multicast round k when its QBA_ROUND timer fires.
    """

    rounds: int  # number of multicast rounds (detectable: 1, paper: f_c)

    def start(self, value: bytes) -> list[tuple[int, object]]: ...

    def on_message(self, sender: int, payload: object) -> list[tuple[int, object]]: ...

    def end_round(self, k: int) -> list[tuple[int, object]]: ...

    def output(self) -> bytes | None: ...


class QbaSessionFactory(Protocol):
    """Builds the session of `node_id` for a committee (leader first)."""

    def __call__(
        self,
        *,
        node_id: int,
        committee: Sequence[int],
        round: int,
        view: int,
        adversary: object | None,
    ) -> QbaSession: ...


def equivocating_adversary(*, seed: int) -> object:
    """The QBA package's equivocating strategy (leader: conflicting values per triple)."""
    raise NotImplementedError("waiting for qbfl.consensus.qba")
