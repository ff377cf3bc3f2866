"""The adversary hook of QBA: one object decides for every faulty member at every point where it sends."""

from __future__ import annotations

import enum
import itertools
import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from qbfl.consensus.qba.messages import TripleId


class KeyChoice(enum.Enum):
    """What a faulty Charlie reveals to Bob (or a faulty Bob forwards as his own key bits)."""

    HONEST = "honest"
    WITHHOLD = "withhold"
    ALTER = "alter"


@dataclass(frozen=True)
class ReplayStep(enum.Enum):
    """Where a faulty member may replay what it sent for an operation (`QbaAdversary.replay`).

    Each is a point after which the receiver has already acted on the original: the copy arrives
    behind it (FIFO), so a participant must ignore it (one-time keys, App. A.1) or prove the sender
    faulty; ROUND_END copies arrive in the next multicast round and must be dropped as stale.
    """

    SIGN = "sign"  # signer, right after its SignedValue
    FORWARD = "forward"  # Bob, right after his Forwarded
    REVEAL = "reveal"  # Charlie, right after her KeysRevealed
    CHECK = "check"  # Bob, after his signature check (Charlie has revealed; Accepted sent or not)
    ACCEPTED = "accepted"  # Charlie, when Bob's Accepted arrives
    ROUND_END = "round-end"  # any role, when the multicast round closes


@dataclass(frozen=True)
class SignChoice:
    """What a faulty signer sends Bob: `value`, with a valid signature or a broken one."""

    value: bytes
    valid: bool = True


@dataclass(frozen=True)
class ForwardChoice:
    """What a faulty Bob forwards to Charlie.

    value: None keeps the received document; another value is a tamper. A tampered document carries a
    valid signature only when the signer is faulty too (colluders share keys); otherwise the received
    signature goes along and Charlie's check fails. valid=False breaks the signature on purpose.
    alter_keys: forward wrong X_b, Y_b (provable: they do not match Charlie's commitment).
    despite_check: forward even when paper mode's consistency check failed (an honest Bob aborts:
    App. A.2, the forwarder checks the relayed value against its own message one depth earlier).
    """

    value: bytes | None = None
    valid: bool = True
    alter_keys: bool = False
    despite_check: bool = False


class QbaAdversary(Protocol):
    """Consulted only for faulty members; `honest`/`received` say what an honest member would send."""

    def sign(self, signer: int, triple: TripleId, honest: bytes | None) -> SignChoice | None:
        """None: send nothing for this triple."""
        ...

    def forward(self, bob: int, triple: TripleId, received: bytes) -> ForwardChoice | None:
        """None: drop (do not forward to Charlie)."""
        ...

    def reveal(self, charlie: int, triple: TripleId) -> KeyChoice: ...

    def announce(self, bob: int, triple: TripleId, verified: bool) -> bool:
        """Whether Bob tells Charlie he accepted (honest: iff verified)."""
        ...

    def reforge(self, member: int, triple: TripleId) -> bytes | None:
        """A second document for an operation whose signing keys the faulty `member` knows, or None.

        Consulted for a faulty Bob after his check, when Charlie's revealed X_c, Y_c give him the full
        K_X = X_b ⊕ X_c, K_Y = Y_b ⊕ Y_c: he signs the document with them and sends Forwarded + Accepted
        again (issue 10's forgery). Consulted for a faulty signer after its SignedValue: a second,
        validly signed document for the same operation. Honest: None.
        """
        ...

    def replay(self, member: int, triple: TripleId, step: ReplayStep) -> bool:
        """Whether `member` re-sends, at `step`, every message it has sent for `triple` so far."""
        ...


class HonestAdversary:
    """Faulty members that behave honestly (a baseline and the default)."""

    def sign(self, signer: int, triple: TripleId, honest: bytes | None) -> SignChoice | None:
        return None if honest is None else SignChoice(honest)

    def forward(self, bob: int, triple: TripleId, received: bytes) -> ForwardChoice | None:
        return ForwardChoice()

    def reveal(self, charlie: int, triple: TripleId) -> KeyChoice:
        return KeyChoice.HONEST

    def announce(self, bob: int, triple: TripleId, verified: bool) -> bool:
        return verified

    def reforge(self, member: int, triple: TripleId) -> bytes | None:
        return None

    def replay(self, member: int, triple: TripleId, step: ReplayStep) -> bool:
        return False


class SilentAdversary(HonestAdversary):
    """Faulty members crash: they send nothing at all."""

    def sign(self, signer: int, triple: TripleId, honest: bytes | None) -> SignChoice | None:
        return None

    def forward(self, bob: int, triple: TripleId, received: bytes) -> ForwardChoice | None:
        return None

    def reveal(self, charlie: int, triple: TripleId) -> KeyChoice:
        return KeyChoice.WITHHOLD

    def announce(self, bob: int, triple: TripleId, verified: bool) -> bool:
        return False


class EquivocatingLeader(HonestAdversary):
    """A faulty signer that sends value_for(triple) in each of its triples; other faulty acts are honest.

    With a table keyed by (Bob, Charlie) it is the leader of the DESIGN §6 counterexamples.
    """

    def __init__(self, value_for: Callable[[TripleId], bytes | None]) -> None:
        self._value_for = value_for

    @classmethod
    def from_table(cls, table: Mapping[tuple[int, int], bytes]) -> EquivocatingLeader:
        """Round-1 values by (Bob, Charlie); later rounds (relays) stay honest."""

        def value_for(triple: TripleId) -> bytes | None:
            return table.get((triple.bob, triple.charlie)) if triple.round == 1 else None

        return cls(value_for)

    def sign(self, signer: int, triple: TripleId, honest: bytes | None) -> SignChoice | None:
        chosen = self._value_for(triple)
        if chosen is None:
            return super().sign(signer, triple, honest)
        return SignChoice(chosen)


class TamperingRelay(HonestAdversary):
    """Faulty members relay `value` instead of what they received: as Bob (forward) and as primary (sign)."""

    def __init__(self, value: bytes = b"tampered") -> None:
        self.value = value

    def sign(self, signer: int, triple: TripleId, honest: bytes | None) -> SignChoice | None:
        if triple.round == 1:
            return super().sign(signer, triple, honest)
        return SignChoice(self.value)

    def forward(self, bob: int, triple: TripleId, received: bytes) -> ForwardChoice | None:
        return ForwardChoice(value=self.value)


class RandomByzantine:
    """Every decision drawn from a seeded generator: values from `values`, any deviation with `p`.

    Beyond the four sends: forwards despite a failed consistency check, re-forges with revealed keys
    (`reforge`) and replays of every message kind at every `ReplayStep` (issue 10: the search must be
    able to find a Bob that reuses an operation's keys once Charlie revealed them).
    """

    def __init__(
        self, seed: int, *, values: Sequence[bytes] = (b"0", b"1"), p: float = 0.5
    ) -> None:
        if not 0.0 <= p <= 1.0:
            raise ValueError("p must be a probability")
        self._rng = random.Random(seed)
        self._values = list(values)
        self._p = p

    def _deviate(self) -> bool:
        return self._rng.random() < self._p

    def sign(self, signer: int, triple: TripleId, honest: bytes | None) -> SignChoice | None:
        if not self._deviate():
            return None if honest is None else SignChoice(honest)
        roll = self._rng.random()
        if roll < 0.15:
            return None
        return SignChoice(self._rng.choice(self._values), valid=roll > 0.25)

    def forward(self, bob: int, triple: TripleId, received: bytes) -> ForwardChoice | None:
        if not self._deviate():
            return ForwardChoice()
        roll = self._rng.random()
        if roll < 0.2:
            return None
        return ForwardChoice(
            value=self._rng.choice([None, *self._values]),
            valid=self._rng.random() > 0.2,
            alter_keys=self._rng.random() < 0.15,
            despite_check=self._rng.random() < 0.5,
        )

    def reveal(self, charlie: int, triple: TripleId) -> KeyChoice:
        if not self._deviate():
            return KeyChoice.HONEST
        return self._rng.choice(list(KeyChoice))

    def announce(self, bob: int, triple: TripleId, verified: bool) -> bool:
        return (not verified) if self._deviate() and self._rng.random() < 0.5 else verified

    def reforge(self, member: int, triple: TripleId) -> bytes | None:
        if not self._deviate() or self._rng.random() < 0.5:
            return None
        return self._rng.choice(self._values)

    def replay(self, member: int, triple: TripleId, step: ReplayStep) -> bool:
        return self._deviate() and self._rng.random() < 0.3


def round_one_pairs(committee: Sequence[int]) -> list[tuple[int, int]]:
    """The leader's A_{N−1}^2 ordered (Bob, Charlie) pairs, in a fixed order."""
    others = list(committee[1:])
    return [(b, c) for b in others for c in others if b != c]


def enumerate_leader_signings(
    committee: Sequence[int], values: Sequence[bytes] = (b"0", b"1")
) -> Iterator[tuple[dict[tuple[int, int], bytes], EquivocatingLeader]]:
    """Every assignment of `values` to the leader's round-1 triples: |values|^(A_{N−1}^2) adversaries."""
    pairs = round_one_pairs(committee)
    for choice in itertools.product(values, repeat=len(pairs)):
        table = dict(zip(pairs, choice, strict=True))
        yield table, EquivocatingLeader.from_table(table)
