"""The round's view of QBA: one session per (round, view) on the committee, over qbfl.consensus.qba."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from qbfl.consensus.qba import (
    Accepted,
    Forwarded,
    HonestAdversary,
    InvalidQbaMessage,
    KeysRevealed,
    QbaAdversary,
    QbaMode,
    QbaParticipant,
    SignChoice,
    SignedValue,
    TamperingRelay,
    TripleId,
    TripleKeyDealer,
)
from qbfl.crypto.gf2 import CyclicPolynomialSource, PolynomialPool, PolynomialSource
from qbfl.crypto.keysupply import PairwiseKeySupply
from qbfl.crypto.qds import QdsParams

QBA_MESSAGE_TYPES = (SignedValue, Forwarded, KeysRevealed, Accepted)


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


class _ParticipantSession:
    """QbaParticipant behind the QbaSession interface; refuses (InvalidQbaMessage, nothing changed) a
    payload that is no QBA message or whose claimed sender is not the transport's authenticated one."""

    def __init__(self, participant: QbaParticipant) -> None:
        self._p = participant
        self.rounds = participant.rounds

    @staticmethod
    def _out(messages: Sequence[object]) -> list[tuple[int, object]]:
        return [(m.recipient, m) for m in messages]  # type: ignore[attr-defined]

    def start(self, value: bytes) -> list[tuple[int, object]]:
        return self._out(self._p.start(value))

    def on_message(self, sender: int, payload: object) -> list[tuple[int, object]]:
        if not isinstance(payload, QBA_MESSAGE_TYPES):
            raise InvalidQbaMessage(f"not a QBA message: {type(payload).__name__}")
        if payload.sender != sender:
            raise InvalidQbaMessage(
                f"node {sender} sent a QBA message claiming sender {payload.sender}"
            )
        return self._out(self._p.on_message(payload))

    def end_round(self, k: int) -> list[tuple[int, object]]:
        return self._out(self._p.end_multicast_round(k))

    def output(self) -> bytes | None:
        return self._p.output()


class _RefillingPool:
    """A node's polynomial pool, refilled in batches when empty (counted as offline preparation)."""

    def __init__(self, rng: random.Random, batch: int = 16) -> None:
        self._pool = PolynomialPool(rng=rng)
        self._batch = batch
        self.n = self._pool.n

    def take(self) -> int:
        if not len(self._pool):
            self._pool.prepare(self._batch)
        return self._pool.take()


class QbaSessions:
    """Builds QBA sessions for every node of one process (simulator, tests).

    One TripleKeyDealer per (round, view) stands in for QKD pre-distribution: the first party to
    touch a QDS operation draws its keys from the pairwise supply, the others get their shares of
    that draw. Each node has its own polynomial pool, seeded from (seed, node).
    """

    def __init__(
        self,
        *,
        mode: QbaMode,
        keys: PairwiseKeySupply,
        f: int,
        seed: int,
        n_bits: int = 128,
        reuse_polynomials: Sequence[int] | None = None,
    ) -> None:
        self.mode = mode
        self.f = f
        self._keys = keys
        self._params = QdsParams(n=n_bits) if n_bits != 128 else QdsParams()
        self._seed = seed
        self._dealers: dict[tuple[int, int], TripleKeyDealer] = {}
        # Tests may reuse a few prepared polynomials (NOT one-time, not secure): preparing fresh ones
        # costs milliseconds each and does not change the code path under test.
        self._reuse = tuple(reuse_polynomials) if reuse_polynomials else None
        self._pools: dict[int, PolynomialSource] = {}

    def __call__(
        self,
        *,
        node_id: int,
        committee: Sequence[int],
        round: int,
        view: int,
        adversary: object | None,
    ) -> QbaSession:
        dealer = self._dealers.setdefault((round, view), TripleKeyDealer(self._keys, self._params))
        pool = self._pools.get(node_id)
        if pool is None:
            pool = self._pools[node_id] = (
                CyclicPolynomialSource(self._reuse)
                if self._reuse
                else _RefillingPool(random.Random(self._seed * 1_000_003 + node_id))
            )
        faulty = (node_id,) if adversary is not None else ()
        participant = QbaParticipant(
            me=node_id,
            committee=committee,
            f=min(self.f, (len(committee) - 1) // 2),
            mode=self.mode,
            dealer=dealer,
            polys=pool,
            adversary=adversary,  # type: ignore[arg-type]
            faulty=faulty,
        )
        return _ParticipantSession(participant)


def qba_session_factory(
    *,
    mode: QbaMode | str,
    keys: PairwiseKeySupply,
    f: int,
    seed: int,
    reuse_polynomials: Sequence[int] | None = None,
) -> QbaSessions:
    """The QbaSessionFactory of one process: `mode` from TaskSpec.qba_mode, f = f_c."""
    # TaskSpec.qba_mode (a StrEnum) and the QBA package's QbaMode share their values
    return QbaSessions(
        mode=QbaMode(getattr(mode, "value", mode)),
        keys=keys,
        f=f,
        seed=seed,
        reuse_polynomials=reuse_polynomials,
    )


class _Equivocator(TamperingRelay):
    """Leader: a conflicting value (the message with its last byte flipped, i.e. another update
    hash) in about half of its triples; relay (paper mode): forwards and re-signs that value."""

    def __init__(self, seed: int) -> None:
        super().__init__(b"")
        self._rng = np.random.default_rng(seed)

    def sign(self, signer: int, triple: TripleId, honest: bytes | None) -> SignChoice | None:
        if honest is None:
            return HonestAdversary.sign(self, signer, triple, honest)
        self.value = honest[:-1] + bytes([honest[-1] ^ 1])
        if triple.round == 1 and self._rng.random() < 0.5:
            return HonestAdversary.sign(self, signer, triple, honest)
        return SignChoice(self.value)


def equivocating_adversary(*, seed: int) -> QbaAdversary:
    """The equivocate attack's QBA strategy (DESIGN §7: leader or relay sends conflicting values)."""
    return _Equivocator(seed)
