"""One committee member's QBA state machine: fed messages and round ends, it returns the messages to send."""

from __future__ import annotations

import itertools
from collections.abc import Collection, Iterator, Sequence

from qbfl.consensus.qba.adversary import HonestAdversary, KeyChoice, QbaAdversary
from qbfl.consensus.qba.dealing import TripleKeyDealer
from qbfl.consensus.qba.messages import (
    Accepted,
    Forwarded,
    KeysRevealed,
    QbaMessage,
    QbaMode,
    SignedValue,
    TripleId,
)
from qbfl.consensus.qba.rules import detectable_output, gather_paper, majority, pair_view
from qbfl.crypto import qds
from qbfl.crypto.gf2 import PolynomialSource


def validate_setup(committee: Sequence[int], f: int, mode: QbaMode) -> None:
    if len(set(committee)) != len(committee):
        raise ValueError("committee members must be distinct")
    if len(committee) < 3:
        raise ValueError("QBA needs a leader and at least two other members")
    if f < 0 or (mode is QbaMode.PAPER and f < 1):
        raise ValueError("f must be >= 1 in paper mode (f multicast rounds) and >= 0 otherwise")
    if mode is QbaMode.PAPER and len(committee) - f < 3 and f > 1:
        raise ValueError("paper mode needs two members outside every path: N >= f + 3 when f > 1")


class QbaParticipant:
    """Member `me` of `committee` (leader first) in one QBA instance.

    Message-driven so that the same code runs in the in-memory driver and over gRPC: `start` (leader
    only) and `end_multicast_round` return the signatures of the next multicast round, `on_message`
    returns the replies of the QDS exchange. A faulty member (`me in faulty`) asks `adversary` at every
    point where it sends; colluding faulty members know each other's keys.
    """

    def __init__(
        self,
        *,
        me: int,
        committee: Sequence[int],
        f: int,
        mode: QbaMode = QbaMode.DETECTABLE,
        dealer: TripleKeyDealer,
        polys: PolynomialSource,
        adversary: QbaAdversary | None = None,
        faulty: Collection[int] = (),
        batch: bool = False,
    ) -> None:
        validate_setup(committee, f, mode)
        if me not in committee:
            raise ValueError(f"{me} is not on the committee")
        self.me = me
        self.committee = tuple(committee)
        self.leader = self.committee[0]
        self.f = f
        self.mode = mode
        self.rounds = f if mode is QbaMode.PAPER else 1
        self._paper = mode is QbaMode.PAPER
        self._dealer = dealer
        self._params = dealer.params
        self._polys = polys
        self.faulty = me in faulty
        self._colluders = frozenset(faulty) if self.faulty else frozenset()
        self._adversary: QbaAdversary = adversary or HonestAdversary()
        self._round = 1
        self._value: bytes | None = None
        self._received: dict[tuple[int, ...], list[bytes]] = {}
        self._relayed: dict[tuple[int, ...], bytes | None] = {}
        self._recorded: dict[TripleId, bytes] = {}
        self._direct: dict[TripleId, bytes] = {}
        # pending operations keep the member's own key share: one dealer lookup per role, not two
        self._bob_pending: dict[TripleId, tuple[bytes, int, qds.VerifierKeys]] = {}
        self._charlie_pending: dict[TripleId, tuple[Forwarded, qds.VerifierKeys]] = {}
        self.excluded: set[int] = set()  # members proven faulty (wrong or withheld key bits)
        self.signed = 0  # QDS operations this member started as signer
        self.deviations: list[str] = []
        # batch: signature checks wait for flush() and run vectorised (same results, fewer passes)
        self._batch = batch
        self._bob_queue: list[QueuedCheck] = []
        self._charlie_queue: list[QueuedCheck] = []

    # ------------------------------------------------------------------ sending
    def start(self, value: bytes) -> list[QbaMessage]:
        """Leader: round 1, sign `value` for every ordered (forwarder, verifier) pair (App. A.2)."""
        if self.me != self.leader:
            raise ValueError("only the leader starts a QBA instance")
        self._value = value
        return self._emit(self._plan((self.me,), value))

    def _plan(
        self, path: tuple[int, ...], honest: bytes | None
    ) -> list[tuple[TripleId, bytes, bool]]:
        """(operation, value, valid) for every triple this member signs along `path`."""
        others = [k for k in self.committee if k not in path]
        todo: list[tuple[TripleId, bytes, bool]] = []
        for bob, charlie in itertools.permutations(others, 2):
            triple = TripleId(path, bob, charlie)
            valid = True
            value = honest
            if self.faulty:
                choice = self._adversary.sign(self.me, triple, honest)
                value = None if choice is None else choice.value
                valid = choice is None or choice.valid
                if value != honest or not valid:
                    self.deviations.append(f"{triple}: signer sends {value!r} valid={valid}")
            if value is None:
                continue
            todo.append((triple, value, valid))
        return todo

    def _emit(self, todo: list[tuple[TripleId, bytes, bool]]) -> list[QbaMessage]:
        if self._batch:
            return self._signed(todo, sign_batch([self._sign_inputs(todo)], self._params)[0])
        return self._signed(todo, [self._signature(t, v, ok) for t, v, ok in todo])

    def _sign_inputs(
        self, todo: list[tuple[TripleId, bytes, bool]]
    ) -> tuple[list[bytes], list[qds.SignerKeys], list[int]]:
        """What the vectorised signer needs: values, own key shares, fresh polynomials (in order)."""
        self._dealer.deal([t for t, _, _ in todo])
        return (
            [v for _, v, _ in todo],
            [self._dealer.keys_for(t).alice for t, _, _ in todo],
            [self._polys.take() for _ in todo],
        )

    def _signed(
        self, todo: list[tuple[TripleId, bytes, bool]], sigs: list[int]
    ) -> list[QbaMessage]:
        out: list[QbaMessage] = []
        for (triple, value, valid), sig in zip(todo, sigs, strict=True):
            self.signed += 1
            out.append(SignedValue(triple, self.me, triple.bob, value, sig if valid else sig ^ 1))
        return out

    def _signature(self, triple: TripleId, value: bytes, valid: bool) -> int:
        keys = self._dealer.keys_for(triple).alice
        sig = qds.sign(value, keys, self._polys.take(), self._params).sig
        return sig if valid else sig ^ 1

    # ---------------------------------------------------------------- receiving
    def on_message(self, msg: QbaMessage) -> list[QbaMessage]:
        t = msg.triple
        r = len(t.path)  # t.round, without the property call: this runs four times per operation
        if msg.recipient != self.me or r != self._round or r > self.rounds:
            return []  # not for us, or not this multicast round: lock-step model drops it
        kind = type(msg)
        if kind is SignedValue and msg.sender == t.path[-1] and self.me == t.bob:
            return self._as_bob_received(msg)  # type: ignore[arg-type]
        if kind is Forwarded and msg.sender == t.bob and self.me == t.charlie:
            return self._as_charlie_forwarded(msg)  # type: ignore[arg-type]
        if kind is KeysRevealed and msg.sender == t.charlie and self.me == t.bob:
            return self._as_bob_keys(msg)  # type: ignore[arg-type]
        if kind is Accepted and msg.sender == t.bob and self.me == t.charlie:
            self._as_charlie_accepted(msg)  # type: ignore[arg-type]
        return []

    def _as_bob_received(self, msg: SignedValue) -> list[QbaMessage]:
        t = msg.triple
        if t in self._direct:
            return []  # one signature per operation (a pending one is in _direct too)
        self._direct[t] = msg.doc
        own = self._dealer.keys_for(t).bob
        doc, sig, x, y = msg.doc, msg.sig, own.x, own.y
        if self.faulty:
            choice = self._adversary.forward(self.me, t, msg.doc)
            if choice is None:
                self.deviations.append(f"{t}: Bob drops")
                return []
            if choice.value is not None and choice.value != msg.doc:
                doc = choice.value
                if t.signer in self._colluders and choice.valid:
                    sig = self._signature(t, doc, True)  # colluding signer and Bob: a valid forgery
                self.deviations.append(f"{t}: Bob forwards {doc!r}")
            if not choice.valid:
                sig ^= 1
                self.deviations.append(f"{t}: Bob breaks the signature")
            if choice.alter_keys:
                x ^= 1
                self.deviations.append(f"{t}: Bob forwards wrong key bits")
        self._bob_pending[t] = (msg.doc, msg.sig, own)
        return [Forwarded(t, self.me, t.charlie, doc, sig, x, y)]

    def _as_charlie_forwarded(self, msg: Forwarded) -> list[QbaMessage]:
        t = msg.triple
        if t in self._charlie_pending or t in self._recorded:
            return []
        own = self._dealer.keys_for(t).charlie
        if not qds.bob_bits_match(msg.x, msg.y, own, self._params.n, t.context()):
            self.excluded.add(msg.sender)  # Bob's key bits contradict the dealt commitment
            return []
        self._charlie_pending[t] = (msg, own)
        x, y = own.x, own.y
        if self.faulty:
            choice = self._adversary.reveal(self.me, t)
            if choice is KeyChoice.WITHHOLD:
                self.deviations.append(f"{t}: Charlie withholds keys")
                return []
            if choice is KeyChoice.ALTER:
                x ^= 1
                self.deviations.append(f"{t}: Charlie reveals wrong keys")
        return [KeysRevealed(t, self.me, t.bob, x, y)]

    def _as_bob_keys(self, msg: KeysRevealed) -> list[QbaMessage]:
        t = msg.triple
        pending = self._bob_pending.pop(t, None)
        if pending is None:
            return []
        doc, sig, own = pending
        if not qds.charlie_bits_match(msg.x, msg.y, own, self._params.n, t.context()):
            self.excluded.add(msg.sender)  # Charlie's key bits contradict the dealt commitment
            return self._after_bob_check(t, doc, verified=False)
        if self._batch:
            self._bob_queue.append((t, doc, sig, own.x ^ msg.x, own.y ^ msg.y))
            return []
        verdict = qds.bob_verify(
            qds.QdsSignature(doc, sig),
            own,
            qds.QdsKeyReveal(msg.x, msg.y),
            self._params,
            context=t.context(),
        )
        return self._after_bob_check(t, doc, verified=verdict is qds.QdsVerdict.ACCEPT)

    def _after_bob_check(self, t: TripleId, doc: bytes, *, verified: bool) -> list[QbaMessage]:
        if verified:
            self._record(t, doc)
        announce = verified
        if self.faulty:
            announce = self._adversary.announce(self.me, t, verified)
            if announce != verified:
                self.deviations.append(f"{t}: Bob announces {announce} (verified {verified})")
        return [Accepted(t, self.me, t.charlie)] if announce else []

    def _as_charlie_accepted(self, msg: Accepted) -> None:
        t = msg.triple
        pending = self._charlie_pending.pop(t, None)
        if pending is None:
            return
        fwd, own = pending
        if self._batch:
            # the forwarded key bits already matched the commitment when the forward arrived
            self._charlie_queue.append((t, fwd.doc, fwd.sig, own.x ^ fwd.x, own.y ^ fwd.y))
            return
        verdict = qds.charlie_verify(
            qds.QdsForward(fwd.doc, fwd.sig, fwd.x, fwd.y), own, self._params, context=t.context()
        )
        if verdict is qds.QdsVerdict.ACCEPT:
            self._record(t, fwd.doc)

    def flush(self) -> list[QbaMessage]:
        """Batch mode: run the queued signature checks together; returns Bob's announcements."""
        return flush_together([self])

    def _take_queues(self) -> tuple[list[QueuedCheck], list[QueuedCheck]]:
        bobs, charlies = self._bob_queue, self._charlie_queue
        self._bob_queue, self._charlie_queue = [], []
        return bobs, charlies

    def _apply_checks(
        self,
        bobs: list[QueuedCheck],
        charlies: list[QueuedCheck],
        verdicts: Iterator[qds.QdsVerdict],
    ) -> list[QbaMessage]:
        """Act on the verdicts of `_take_queues`' checks, in queue order (Bob's, then Charlie's)."""
        out: list[QbaMessage] = []
        accept = qds.QdsVerdict.ACCEPT
        for check in bobs:
            out += self._after_bob_check(check[0], check[1], verified=next(verdicts) is accept)
        for check in charlies:
            if next(verdicts) is accept:
                self._record(check[0], check[1])
        return out

    def _record(self, t: TripleId, doc: bytes) -> None:
        path = t.path
        if self._paper and len(path) > 1 and self._relayed.get(path[:-1]) != doc:
            # App. A.2 consistency check: the relayed message must match what this member itself
            # received from the primary one depth earlier; otherwise it is not recorded
            return
        self._recorded[t] = doc
        self._received.setdefault(path, []).append(doc)

    # ---------------------------------------------------------------- round end
    def end_multicast_round(self, r: int) -> list[QbaMessage]:
        """Close multicast round r (the lock-step timeout); returns round r+1's signatures (paper mode)."""
        return self._emit(self._close_round(r))

    def _close_round(self, r: int) -> list[tuple[TripleId, bytes, bool]]:
        """End round r; plan round r+1's signatures (paper mode relays) without signing them yet."""
        if r != self._round:
            raise ValueError(f"expected the end of round {self._round}, got {r}")
        if self._bob_queue or self._charlie_queue:
            raise ValueError(
                "batch mode: call flush() until it returns nothing before ending a round"
            )
        for t in self._bob_pending:
            self.excluded.add(t.charlie)  # forwarded, never got key bits: Charlie withheld them
        self._bob_pending.clear()
        self._charlie_pending.clear()
        self._round += 1
        todo: list[tuple[TripleId, bytes, bool]] = []
        if self.mode is QbaMode.PAPER and r < self.rounds and self.me != self.leader:
            for path in self._paths(r):
                relay = majority(self._received.get(path, ()))
                self._relayed[path] = relay
                todo += self._plan(path + (self.me,), relay)
        return todo

    def _paths(self, length: int) -> list[tuple[int, ...]]:
        """Primary paths of `length` (leader first) that do not contain this member."""
        others = [k for k in self.committee[1:] if k != self.me]
        return [(self.leader, *rest) for rest in itertools.permutations(others, length - 1)]

    # ------------------------------------------------------------------ output
    def output(self) -> bytes | None:
        """The agreed value, or None for ⊥ (an explicit failure)."""
        if self.me == self.leader:
            return self._value
        if self.mode is QbaMode.PAPER:
            return gather_paper(
                me=self.me,
                committee=self.committee,
                f=self.f,
                received=self._received,
                relayed=self._relayed,
            )
        return detectable_output(self.pair_views())

    def pair_views(self) -> dict[int, bytes | None]:
        """Detectable mode: per partner x the fold of (L; Bob me, Charlie x) and (L; Bob x, Charlie me).

        A partner proven faulty (it revealed or forwarded key bits that contradict the dealt
        commitment, or withheld them) cannot be an honest partner, so its pair view may also use the
        value the leader sent this member directly; an honest partner's never does (DESIGN §6).
        """
        views: dict[int, bytes | None] = {}
        root = (self.leader,)
        for x in self.committee[1:]:
            if x == self.me:
                continue
            mine, theirs = TripleId(root, self.me, x), TripleId(root, x, self.me)
            values = [self._recorded.get(mine), self._recorded.get(theirs)]
            if x in self.excluded:
                values.append(self._direct.get(mine))
            views[x] = pair_view(values)
        return views

    @property
    def recorded(self) -> dict[TripleId, bytes]:
        return dict(self._recorded)


QueuedCheck = tuple[TripleId, bytes, int, int, int]  # (operation, doc, sig, K_X, K_Y)


def sign_batch(
    inputs: Sequence[tuple[list[bytes], list[qds.SignerKeys], list[int]]], params: qds.QdsParams
) -> list[list[int]]:
    """Signatures for several signers' `_sign_inputs`, hashed in one vectorised batch."""
    docs = [d for batch in inputs for d in batch[0]]
    keys = [k for batch in inputs for k in batch[1]]
    polys = [p for batch in inputs for p in batch[2]]
    sigs = qds.signature_ints(docs, keys, polys, params)
    out, start = [], 0
    for batch in inputs:
        out.append(sigs[start : start + len(batch[0])])
        start += len(batch[0])
    return out


def end_round_together(members: Sequence[QbaParticipant], r: int) -> list[QbaMessage]:
    """`end_multicast_round(r)` on every member, in order, with all their signing in one batch.

    The in-memory driver's shortcut: each member still plans, takes its keys and polynomials and signs
    only its own operations, in the same order as one call per member; only the arithmetic is pooled.
    """
    todos = [m._close_round(r) for m in members]
    inputs = [m._sign_inputs(todo) for m, todo in zip(members, todos, strict=True)]
    sigs = sign_batch(inputs, members[0]._params) if members else []
    return [
        msg for m, todo, s in zip(members, todos, sigs, strict=True) for msg in m._signed(todo, s)
    ]


def flush_together(members: Sequence[QbaParticipant]) -> list[QbaMessage]:
    """`flush()` on every member, in order, with all their queued checks in one vectorised batch.

    Each member's checks use only its own data and its verdicts are applied exactly as its own flush
    would apply them; pooling the hashing across members is an in-memory simulation shortcut.
    """
    if not members:
        return []
    queues = [m._take_queues() for m in members]
    items = [item[1:] for bobs, charlies in queues for item in (*bobs, *charlies)]
    verdicts = iter(qds.check_many(items, members[0]._params))
    out: list[QbaMessage] = []
    for m, (bobs, charlies) in zip(members, queues, strict=True):
        out += m._apply_checks(bobs, charlies, verdicts)
    return out
