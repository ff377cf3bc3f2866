"""One committee member's QBA state machine: fed messages and round ends, it returns the messages to send."""

from __future__ import annotations

import itertools
import operator
from collections.abc import Collection, Iterator, Sequence

from qbfl.consensus.qba.admission import Admission, validate_setup
from qbfl.consensus.qba.adversary import HonestAdversary, KeyChoice, QbaAdversary, ReplayStep
from qbfl.consensus.qba.batching import QueuedCheck, flush_together, sign_batch
from qbfl.consensus.qba.dealing import TripleKeyDealer
from qbfl.consensus.qba.messages import (
    QBA_DOC_MAX_BYTES,
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
from qbfl.errors import ConfigError


class QbaParticipant:
    """Member `me` of `committee` (leader first) in one QBA instance.

    Message-driven so that the same code runs in the in-memory driver and over gRPC: `start` (leader
    only) and `end_multicast_round` return the signatures of the next multicast round, `on_message`
    returns the replies of the QDS exchange. A faulty member (`me in faulty`) asks `adversary` at every
    point where it sends; colluding faulty members know each other's keys.

    Every message is checked before it changes anything (`InvalidQbaMessage` otherwise): its shape,
    sender and recipient, its QDS values against n, and its operation against this committee and mode
    (`operation_error`), so a peer can make this member draw keys and hold state only for the
    operations of this session (docs/qba.md, "Bounds").
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
            raise ConfigError(f"{me} is not on the committee")
        self.me = operator.index(me)
        self.committee = tuple(operator.index(k) for k in committee)
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
        # every received message passes it before it changes anything; it keeps one TripleId
        # instance per valid operation (context bytes built once): verifier_operations(N, f) at most
        self._admission = Admission(
            me=self.me, committee=self.committee, mode=mode, rounds=self.rounds, n=self._params.n
        )
        self._received: dict[tuple[int, ...], list[bytes]] = {}
        self._relayed: dict[tuple[int, ...], bytes | None] = {}
        self._recorded: dict[TripleId, bytes] = {}
        # Bob: the first SignedValue's document per operation (later ones are ignored)
        self._direct: dict[TripleId, bytes] = {}
        # Charlie: the first Forwarded per operation. One-time keys (App. A.1): once Charlie has
        # answered a forward, X_b ⊕ X_c and Y_b ⊕ Y_c are known to Bob, so no later forward may be
        # checked with them again (issue 10: a Bob re-signing with the revealed keys forged values)
        self._forwarded: dict[TripleId, Forwarded] = {}
        # pending operations keep the member's own key share: one dealer lookup per role, not two
        self._bob_pending: dict[TripleId, tuple[bytes, int, qds.VerifierKeys]] = {}
        self._charlie_pending: dict[TripleId, tuple[Forwarded, qds.VerifierKeys]] = {}
        self.excluded: set[int] = (
            set()
        )  # members proven faulty (wrong or withheld key bits, two forwards)
        # signatures this member computed, each with a fresh polynomial: its own QDS operations and,
        # when faulty, its forgeries (a colluder's tampered forward, a re-forge)
        self.signed = 0
        self.ignored = 0  # well-formed messages dropped: repeats, replays, another multicast round
        self.deviations: list[str] = []
        # what a faulty member sent per operation this round, for its adversary's replays
        self._sent: dict[TripleId, list[QbaMessage]] = {}
        # batch: signature checks wait for flush() and run vectorised (same results, fewer passes)
        self._batch = batch
        self._bob_queue: list[QueuedCheck] = []
        self._charlie_queue: list[QueuedCheck] = []

    # ------------------------------------------------------------------ sending
    def start(self, value: bytes) -> list[QbaMessage]:
        """Leader: round 1, sign `value` for every ordered (forwarder, verifier) pair (App. A.2)."""
        if self.me != self.leader:
            raise ConfigError("only the leader starts a QBA instance")
        if type(value) is not bytes or len(value) > QBA_DOC_MAX_BYTES:
            raise ConfigError(f"the QBA value is bytes of at most {QBA_DOC_MAX_BYTES}")
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
        return self._signed(todo, [self._signature(t, v) for t, v, _ in todo])

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
        """The SignedValues of `todo` from its valid signatures; a broken one (valid=False) is the
        valid one with its low bit flipped, here and only here (batched and unbatched alike)."""
        out: list[QbaMessage] = []
        for (triple, value, valid), sig in zip(todo, sigs, strict=True):
            self.signed += 1
            msg = SignedValue(triple, self.me, triple.bob, value, sig if valid else sig ^ 1)
            out.append(msg)
            if self.faulty:
                out += self._faulty_extras(msg, ReplayStep.SIGN)
        return out

    def _signature(self, triple: TripleId, value: bytes) -> int:
        """A valid signature of `value` with the operation's signer keys and a fresh polynomial
        (counted in `_signed`, which also breaks it when the adversary asked for that)."""
        keys = self._dealer.keys_for(triple).alice
        return qds.sign(value, keys, self._polys.take(), self._params).sig

    def _forge(self, value: bytes, keys: qds.SignerKeys) -> int:
        """A faulty member's extra signature (colluding signer's keys or re-forge): counted in `signed`."""
        self.signed += 1
        return qds.sign(value, keys, self._polys.take(), self._params).sig

    # ---------------------------------------------------------------- receiving
    def on_message(self, msg: QbaMessage) -> list[QbaMessage]:
        """Handle one received message; returns the replies. `InvalidQbaMessage` (state unchanged) for
        a message that cannot belong to this session; a repeat or another round's message is ignored."""
        t = self._admission.admit(msg, self._round)
        if t is None:
            self.ignored += 1  # the lock-step model drops a message of another multicast round
            return []
        kind = type(msg)
        if kind is SignedValue:
            return self._as_bob_received(t, msg)  # type: ignore[arg-type]
        if kind is Forwarded:
            return self._as_charlie_forwarded(t, msg)  # type: ignore[arg-type]
        if kind is KeysRevealed:
            return self._as_bob_keys(t, msg)  # type: ignore[arg-type]
        return self._as_charlie_accepted(t)

    def void(self, t: TripleId) -> bool:
        """Bob learns that Charlie could not reveal key bits for `t` because the SIGNER used them
        twice (a proof the node shell checked: qbfl.node.qbakeys): the operation is abandoned
        without blaming Charlie, as if its signature had never arrived. An honest signer never
        reuses key material, so honest Charlies are never excluded for a faulty signer's reuse.
        Returns whether an operation was pending."""
        return self._bob_pending.pop(t, None) is not None

    def operation_error(self, t: TripleId) -> str | None:
        """Why `t` is not a QDS operation of this session (None if it is)."""
        return self._admission.operation_error(t)

    def _as_bob_received(self, t: TripleId, msg: SignedValue) -> list[QbaMessage]:
        if t in self._direct:
            self.ignored += 1  # one document per operation: the keys verify only the first (A.1)
            return []
        # App. A.2, later rounds: "the forwarder performs a consistency check" — the relayed value
        # must equal this member's own message for the path one depth earlier; if not, Bob rejects
        # and aborts the operation (A.1), so Charlie never verifies or records it
        consistent = (
            not self._paper or len(t.path) == 1 or self._relayed.get(t.path[:-1]) == msg.doc
        )
        if not consistent and not self.faulty:
            self._direct[t] = msg.doc
            return []
        own = self._dealer.keys_for(t).bob  # a short QKD pool raises here, before any state change
        self._direct[t] = msg.doc
        doc, sig, x, y = msg.doc, msg.sig, own.x, own.y
        if self.faulty:
            choice = self._adversary.forward(self.me, t, msg.doc)
            if choice is None:
                if consistent:
                    self.deviations.append(f"{t}: Bob drops")
                return []
            if not consistent:
                if not choice.despite_check:
                    return []  # aborts, as an honest Bob would
                self.deviations.append(f"{t}: Bob forwards despite the consistency check")
            if choice.value is not None and choice.value != msg.doc:
                doc = choice.value
                if t.signer in self._colluders and choice.valid:
                    # colluding signer and Bob: a valid forgery with the signer's keys
                    sig = self._forge(doc, self._dealer.keys_for(t).alice)
                self.deviations.append(f"{t}: Bob forwards {doc!r}")
            if not choice.valid:
                sig ^= 1
                self.deviations.append(f"{t}: Bob breaks the signature")
            if choice.alter_keys:
                x ^= 1
                self.deviations.append(f"{t}: Bob forwards wrong key bits")
        self._bob_pending[t] = (msg.doc, msg.sig, own)
        out: list[QbaMessage] = [Forwarded(t, self.me, t.charlie, doc, sig, x, y)]
        if self.faulty:
            out += self._faulty_extras(out[0], ReplayStep.FORWARD)
        return out

    def _as_charlie_forwarded(self, t: TripleId, msg: Forwarded) -> list[QbaMessage]:
        first = self._forwarded.get(t)
        if first is not None:
            self.ignored += 1
            if first != msg:
                # an honest Bob forwards once per operation (on the one SignedValue he accepts), so
                # a different second forward over an authenticated channel proves him faulty; an
                # identical one may be a network duplicate and is only ignored
                self.excluded.add(msg.sender)
            return []
        own = self._dealer.keys_for(t).charlie  # a short QKD pool raises before any state change
        self._forwarded[t] = msg
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
        out: list[QbaMessage] = [KeysRevealed(t, self.me, t.bob, x, y)]
        if self.faulty:
            out += self._faulty_extras(out[0], ReplayStep.REVEAL)
        return out

    def _as_bob_keys(self, t: TripleId, msg: KeysRevealed) -> list[QbaMessage]:
        pending = self._bob_pending.pop(t, None)
        if pending is None:
            self.ignored += 1  # no forward of ours waits for keys: a repeat, or out of order
            return []
        doc, sig, own = pending
        if not qds.charlie_bits_match(msg.x, msg.y, own, self._params.n, t.context()):
            self.excluded.add(msg.sender)  # Charlie's key bits contradict the dealt commitment
            return self._after_bob_check(t, doc, verified=False, keys=None)
        keys = qds.SignerKeys(own.x ^ msg.x, own.y ^ msg.y)  # K_X, K_Y (App. A.1)
        if self._batch:
            self._bob_queue.append((t, doc, sig, keys.x, keys.y))
            return []
        verdict = qds.bob_verify(
            qds.QdsSignature(doc, sig),
            own,
            qds.QdsKeyReveal(msg.x, msg.y),
            self._params,
            context=t.context(),
        )
        return self._after_bob_check(t, doc, verified=verdict is qds.QdsVerdict.ACCEPT, keys=keys)

    def _after_bob_check(
        self, t: TripleId, doc: bytes, *, verified: bool, keys: qds.SignerKeys | None
    ) -> list[QbaMessage]:
        """Record and announce; `keys` (K_X, K_Y when Charlie's bits matched) serve a faulty Bob's re-forge."""
        if verified:
            self._record(t, doc)
        announce = verified
        if self.faulty:
            announce = self._adversary.announce(self.me, t, verified)
            if announce != verified:
                self.deviations.append(f"{t}: Bob announces {announce} (verified {verified})")
        out: list[QbaMessage] = [Accepted(t, self.me, t.charlie)] if announce else []
        if self.faulty:
            if out:
                self._sent.setdefault(t, []).append(out[0])
            out += self._reforge(t, keys)
            out += self._replays(t, ReplayStep.CHECK)
        return out

    def _as_charlie_accepted(self, t: TripleId) -> list[QbaMessage]:
        pending = self._charlie_pending.pop(t, None)
        if pending is None:
            self.ignored += 1  # not revealed for this operation, or already checked: nothing to do
            return []
        # a faulty Charlie's replays: once per operation, when Bob's (first) announcement arrives
        out = self._replays(t, ReplayStep.ACCEPTED) if self.faulty else []
        fwd, own = pending
        if self._batch:
            # the forwarded key bits already matched the commitment when the forward arrived
            self._charlie_queue.append((t, fwd.doc, fwd.sig, own.x ^ fwd.x, own.y ^ fwd.y))
            return out
        verdict = qds.charlie_verify(
            qds.QdsForward(fwd.doc, fwd.sig, fwd.x, fwd.y), own, self._params, context=t.context()
        )
        if verdict is qds.QdsVerdict.ACCEPT:
            self._record(t, fwd.doc)
        return out

    # ------------------------------------------------------- faulty extras
    def _faulty_extras(self, sent: QbaMessage, step: ReplayStep) -> list[QbaMessage]:
        """After a faulty member sent `sent`: log it, then its adversary's re-forge and replays."""
        t = sent.triple
        self._sent.setdefault(t, []).append(sent)
        out: list[QbaMessage] = []
        if step is ReplayStep.SIGN:
            out += self._reforge(t, self._dealer.keys_for(t).alice)
        return out + self._replays(t, step)

    def _reforge(self, t: TripleId, keys: qds.SignerKeys | None) -> list[QbaMessage]:
        """A faulty member signs a second document for `t` with keys it knows (issue 10, finding 1)."""
        if keys is None:
            return []
        doc = self._adversary.reforge(self.me, t)
        if doc is None:
            return []
        sig = self._forge(doc, keys)
        if self.me == t.signer:
            self.deviations.append(f"{t}: signer signs a second document {doc!r}")
            extra: list[QbaMessage] = [SignedValue(t, self.me, t.bob, doc, sig)]
        else:
            self.deviations.append(f"{t}: Bob re-forwards {doc!r} signed with the revealed keys")
            own = self._dealer.keys_for(t).bob
            extra = [
                Forwarded(t, self.me, t.charlie, doc, sig, own.x, own.y),
                Accepted(t, self.me, t.charlie),
            ]
        self._sent.setdefault(t, []).extend(extra)
        return extra

    def _replays(self, t: TripleId, step: ReplayStep) -> list[QbaMessage]:
        sent = self._sent.get(t)
        if not sent or not self._adversary.replay(self.me, t, step):
            return []
        self.deviations.append(f"{t}: replays {len(sent)} message(s) at {step.value}")
        return list(sent)

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
        for t, doc, _, kx, ky in bobs:
            out += self._after_bob_check(
                t, doc, verified=next(verdicts) is accept, keys=qds.SignerKeys(kx, ky)
            )
        for check in charlies:
            if next(verdicts) is accept:
                self._record(check[0], check[1])
        return out

    def _record(self, t: TripleId, doc: bytes) -> None:
        # Bob's consistency check (paper mode) ran before he forwarded; Charlie records what verifies
        # (App. A.2 gives the check to the forwarder only: docs/qba.md, "Finding 12")
        self._recorded[t] = doc
        self._received.setdefault(t.path, []).append(doc)

    # ---------------------------------------------------------------- round end
    def end_multicast_round(self, r: int) -> list[QbaMessage]:
        """Close multicast round r (the lock-step timeout); returns round r+1's signatures (paper mode)."""
        todo, stale = self._close_round(r)
        return stale + self._emit(todo)

    def _close_round(self, r: int) -> tuple[list[tuple[TripleId, bytes, bool]], list[QbaMessage]]:
        """End round r; plan round r+1's signatures (paper mode relays) without signing them yet.

        Also returns a faulty member's end-of-round replays (they reach the others in round r+1)."""
        if r != self._round:
            raise ConfigError(f"expected the end of round {self._round}, got {r}")
        if self._bob_queue or self._charlie_queue:
            raise ConfigError(
                "batch mode: call flush() until it returns nothing before ending a round"
            )
        for t in self._bob_pending:
            self.excluded.add(t.charlie)  # forwarded, never got key bits: Charlie withheld them
        self._bob_pending.clear()
        self._charlie_pending.clear()
        stale: list[QbaMessage] = []
        for t in list(self._sent):
            stale += self._replays(t, ReplayStep.ROUND_END)
        self._sent.clear()
        self._round += 1
        todo: list[tuple[TripleId, bytes, bool]] = []
        if self.mode is QbaMode.PAPER and r < self.rounds and self.me != self.leader:
            for path in self._paths(r):
                relay = majority(self._received.get(path, ()))
                self._relayed[path] = relay
                todo += self._plan(path + (self.me,), relay)
        return todo, stale

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
        commitment, withheld them, or forwarded twice) cannot be an honest partner, so its pair view
        may also use the value the leader sent this member directly; an honest partner's never does
        (DESIGN §6).
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
