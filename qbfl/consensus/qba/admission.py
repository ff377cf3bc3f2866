"""What a QBA member accepts from peers: the session's setup and every message, checked before any state change."""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from typing import Any

from qbfl.consensus.qba.messages import (
    INT_FIELDS,
    QBA_DOC_MAX_BYTES,
    QBA_MAX_COMMITTEE,
    QBA_MAX_PATH,
    Accepted,
    Forwarded,
    InvalidQbaMessage,
    KeysRevealed,
    QbaMessage,
    QbaMode,
    SignedValue,
    TripleId,
    shape_error,
)
from qbfl.errors import ConfigError


def validate_setup(committee: Sequence[int], f: int, mode: QbaMode) -> None:
    if len(set(committee)) != len(committee):
        raise ConfigError("committee members must be distinct")
    if len(committee) < 3:
        raise ConfigError("QBA needs a leader and at least two other members")
    if len(committee) > QBA_MAX_COMMITTEE:
        raise ConfigError(
            f"QBA committees hold at most {QBA_MAX_COMMITTEE} members (docs/qba.md, Bounds); "
            f"got {len(committee)}"
        )
    if any(operator.index(k) < 0 for k in committee):
        raise ConfigError("committee ids are non-negative integers")
    if f < 0 or (mode is QbaMode.PAPER and f < 1):
        raise ConfigError("f must be >= 1 in paper mode (f multicast rounds) and >= 0 otherwise")
    if mode is QbaMode.PAPER and len(committee) - f < 3 and f > 1:
        raise ConfigError("paper mode needs two members outside every path: N >= f + 3 when f > 1")
    if mode is QbaMode.PAPER and f > QBA_MAX_PATH:
        raise ConfigError(f"paper mode runs at most {QBA_MAX_PATH} multicast rounds")


class Admission:
    """The checks member `me` applies to every received message of one session (issue 10).

    A new operation id is checked in full (`operation_error`); once admitted, `known` keeps one
    instance of it, so later messages of the same operation pay only the per-message checks
    (`message_error`: kind, roles, field types) and the range checks of the QDS values against n.
    `known` holds only valid operations of this session in which `me` is Bob or Charlie: at most
    `rules.verifier_operations(N, f)` entries, freed with the session.
    """

    def __init__(
        self, *, me: int, committee: tuple[int, ...], mode: QbaMode, rounds: int, n: int
    ) -> None:
        self.me = me
        self.leader = committee[0]
        self.mode = mode
        self.rounds = rounds
        self.n = n
        self._members = frozenset(committee)
        self._x_limit, self._y_limit = 1 << n, 1 << (2 * n)  # X: n bits; Y and Sig: 2n bits (A.1)
        self.known: dict[TripleId, TripleId] = {}
        self._checks: dict[type, Callable[[Any, TripleId], bool]] = {
            SignedValue: self._signed_ok,
            Forwarded: self._forwarded_ok,
            KeysRevealed: self._revealed_ok,
            Accepted: self._accepted_ok,
        }

    def operation_error(self, t: TripleId) -> str | None:
        """Why `t` is not a QDS operation of this session (None if it is; its shape already checked).

        App. A.2: the leader is the first primary, every id is a committee member, and the path has
        at most `rounds` primaries (detectable mode: the leader alone, round 1 only).
        """
        path = t.path
        if path[0] != self.leader:
            return f"{t}: the path must start at the leader {self.leader}"
        if len(path) > self.rounds:
            return f"{t}: a {self.mode.value}-mode session has {self.rounds} multicast round(s)"
        members = self._members
        if t.bob not in members or t.charlie not in members or not members.issuperset(path):
            return f"{t}: names a node outside the committee"
        return None

    def admit(self, msg: QbaMessage, current_round: int) -> TripleId | None:
        """This session's instance of msg's operation, or None when the message belongs to another
        multicast round (the lock-step model drops it). Raises InvalidQbaMessage and changes nothing
        for a message that cannot belong to this session."""
        check = self._checks.get(type(msg))
        if check is None:
            raise InvalidQbaMessage(f"not a QBA message: {type(msg).__name__}")
        triple = msg.triple
        t = self.known.get(triple) if type(triple) is TripleId else None
        if t is None:
            problem = shape_error(msg) or self.operation_error(triple)
            if problem is not None:
                raise InvalidQbaMessage(problem)
        if not check(msg, t or triple):
            raise InvalidQbaMessage(
                message_error(msg, triple, self.me) or self._range_error(msg) or "invalid"
            )
        if triple.round != current_round:
            return None
        if t is None:
            t = self.known[triple] = triple  # valid, this round's, `me` its Bob or Charlie
        return t

    # One check per kind, all of a message's fields in one expression (this runs for every message;
    # `message_error` and `_range_error` then say what failed). App. A.1: X is n bits, Y and Sig 2n.
    def _signed_ok(self, m: SignedValue, t: TripleId) -> bool:
        return (
            m.sender == t.path[-1]
            and m.recipient == self.me == t.bob
            and type(m.doc) is bytes
            and len(m.doc) <= QBA_DOC_MAX_BYTES
            and type(m.sig) is int
            and 0 <= m.sig < self._y_limit
        )

    def _forwarded_ok(self, m: Forwarded, t: TripleId) -> bool:
        return (
            m.sender == t.bob
            and m.recipient == self.me == t.charlie
            and type(m.doc) is bytes
            and len(m.doc) <= QBA_DOC_MAX_BYTES
            and type(m.sig) is int
            and type(m.x) is int
            and type(m.y) is int
            and 0 <= m.sig < self._y_limit
            and 0 <= m.x < self._x_limit
            and 0 <= m.y < self._y_limit
        )

    def _revealed_ok(self, m: KeysRevealed, t: TripleId) -> bool:
        return (
            m.sender == t.charlie
            and m.recipient == self.me == t.bob
            and type(m.x) is int
            and type(m.y) is int
            and 0 <= m.x < self._x_limit
            and 0 <= m.y < self._y_limit
        )

    def _accepted_ok(self, m: Accepted, t: TripleId) -> bool:
        return m.sender == t.bob and m.recipient == self.me == t.charlie

    def _range_error(self, msg: QbaMessage) -> str | None:
        """App. A.1: X is n bits, Y and Sig 2n bits; wider values are no key bits or signature at all."""
        kind = type(msg)
        if kind is Accepted:
            return None
        if kind is not SignedValue and not (
            msg.x < self._x_limit and msg.y < self._y_limit  # type: ignore[union-attr]
        ):
            return f"{msg.triple}: key bits wider than X (n) or Y (2n), n = {self.n}"
        if kind is not KeysRevealed and not msg.sig < self._y_limit:  # type: ignore[union-attr]
            return f"{msg.triple}: a signature has 2n = {2 * self.n} bits"
        return None


def message_error(msg: QbaMessage, t: TripleId, me: int) -> str | None:
    """The per-message checks of an operation already admitted: kind, roles, recipient, field types."""
    kind = type(msg)
    if kind is SignedValue:
        ok = msg.sender == t.path[-1] and msg.recipient == me == t.bob
    elif kind is KeysRevealed:
        ok = msg.sender == t.charlie and msg.recipient == me == t.bob
    elif kind is Forwarded or kind is Accepted:
        ok = msg.sender == t.bob and msg.recipient == me == t.charlie
    else:
        return f"not a QBA message: {kind.__name__}"
    if not ok:
        return f"{kind.__name__} for {t} from {msg.sender} to {msg.recipient}: wrong roles"
    if kind is SignedValue or kind is Forwarded:
        doc = msg.doc  # type: ignore[union-attr]
        if type(doc) is not bytes or len(doc) > QBA_DOC_MAX_BYTES:
            return f"the document is bytes of at most {QBA_DOC_MAX_BYTES}"
    for name in INT_FIELDS[kind]:
        value = getattr(msg, name)
        if type(value) is not int or value < 0:
            return f"{name} is a non-negative int"
    return None
