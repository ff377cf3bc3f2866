"""QBA sessions of one node process: its own polynomial pool, prepared off the event loop, and the
key material of each QDS operation (DESIGN §6)."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Sequence

import blake3

from qbfl.consensus.agreement import QbaSession
from qbfl.consensus.qba import (
    Accepted,
    Forwarded,
    KeysRevealed,
    QbaMode,
    QbaParticipant,
    SignedValue,
    TripleId,
)
from qbfl.consensus.wire import KeyedPayload
from qbfl.crypto import qds
from qbfl.crypto.gf2 import PolynomialPool
from qbfl.crypto.qds import QdsParams, SignerKeys, TripleKeys, VerifierKeys
from qbfl.node.qkdkeys import ChunkReused, NetworkTripleDealer


class PreparedPolynomials:
    """A PolynomialSource kept stocked by a background thread (App. A.1's p_a prepared offline).

    `take` never waits for the thread when the pool holds polynomials; when it runs dry (a burst)
    it prepares one batch inline, so the protocol slows down instead of failing.
    """

    def __init__(self, rng: random.Random, *, low_water: int = 32, batch: int = 32) -> None:
        self._pool = PolynomialPool(rng=rng)
        self.n = self._pool.n
        self._low, self._batch = low_water, batch
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="qds-polynomials", daemon=True)

    def start(self) -> None:
        self._thread.start()
        self._wake.set()

    def stop(self) -> None:
        self._stopped = True
        self._wake.set()

    @property
    def stock(self) -> int:
        return len(self._pool)

    def take(self) -> int:
        with self._lock:
            if not len(self._pool):
                self._pool.prepare(self._batch)
            poly = self._pool.take()
        if len(self._pool) < self._low:
            self._wake.set()
        return poly

    def _run(self) -> None:
        while not self._stopped:
            self._wake.wait()
            self._wake.clear()
            while not self._stopped and len(self._pool) < 2 * self._low:
                with self._lock:
                    self._pool.prepare(self._batch)


class SeededOperationKeys:
    """A stand-in for QKD pre-distribution: each operation's keys derived from a shared seed.

    Every process computes the same X_b, Y_b, X_c, Y_c for an operation from (seed, round, view,
    triple), whatever order it meets operations in — which is what a key source of separate
    processes must guarantee. It is NOT secret (anyone with the seed derives every key), exactly
    like SeededKeySupply in one process: use it where key distribution is assumed done
    (`--qkd seeded`); `bb84` gives every pair real one-time keys from its own QKD sessions.
    """

    def __init__(self, secret: bytes, *, round: int, view: int, params: QdsParams) -> None:
        self.params = params
        self._base = secret + f"/{round}/{view}/".encode()
        self._dealt: dict[TripleId, TripleKeys] = {}

    @property
    def operations(self) -> int:
        return len(self._dealt)

    def deal(self, triples: list[TripleId]) -> None:
        for t in triples:
            self.keys_for(t)

    def keys_for(self, triple: TripleId) -> TripleKeys:
        keys = self._dealt.get(triple)
        if keys is not None:
            return keys
        n = self.params.n
        context = triple.context()
        stream = blake3.blake3(self._base + context).digest(length=2 * 3 * n // 8)
        kb = int.from_bytes(stream[: 3 * n // 8], "little")
        kc = int.from_bytes(stream[3 * n // 8 :], "little")
        mask = (1 << n) - 1
        xb, yb, xc, yc = kb & mask, kb >> n, kc & mask, kc >> n
        keys = TripleKeys(
            alice=SignerKeys(xb ^ xc, yb ^ yc),
            bob=VerifierKeys(xb, yb, qds._commit(context, b"C", xc, yc, n)),
            charlie=VerifierKeys(xc, yc, qds._commit(context, b"B", xb, yb, n)),
        )
        self._dealt[triple] = keys
        return keys


class _Session:
    """QbaParticipant behind the round's QbaSession interface (messages claim their transport sender).

    With a network key dealer, the signed key reference of each operation travels with its
    SignedValue and Forwarded (KeyedPayload); a Charlie whose chunk the signer had already used
    answers Bob with the proof instead of key bits, and Bob abandons the operation (qkdkeys).

    `complete()` says when this member has every QBA message it can expect in detectable mode's
    single round: per partner x, as Bob of (L; me, x) the signature and then x's key bits, as
    Charlie of (L; x, me) the forward and then Bob's acceptance — 4·(Nc − 2) messages, each
    counted only from the one sender allowed to send it. The leader expects none. Paper mode's
    relay rounds stay timer-driven (a member closing a round early would send the next round's
    relays to members that still drop them).
    """

    def __init__(self, participant: QbaParticipant, dealer: NetworkTripleDealer | None) -> None:
        self._p = participant
        self._dealer = dealer
        self.rounds = participant.rounds
        self._expected: set[tuple[type, TripleId, int]] = set()
        if participant.mode is QbaMode.DETECTABLE and participant.me != participant.leader:
            root, me = (participant.leader,), participant.me
            for x in participant.committee[1:]:
                if x != me:
                    mine, theirs = TripleId(root, me, x), TripleId(root, x, me)
                    self._expected |= {
                        (SignedValue, mine, participant.leader),
                        (KeysRevealed, mine, x),
                        (Forwarded, theirs, x),
                        (Accepted, theirs, x),
                    }
        self._waiting = set(self._expected)
        self._leader = participant.me == participant.leader
        self.voided = 0

    def complete(self) -> bool:
        if self._leader:
            return True
        return bool(self._expected) and not self._waiting

    def _out(self, messages: Sequence[object]) -> list[tuple[int, object]]:
        out: list[tuple[int, object]] = []
        for m in messages:
            payload: object = m
            if self._dealer is not None and isinstance(m, SignedValue | Forwarded):
                payload = KeyedPayload(m, self._dealer.signed_keys(m.triple))
            out.append((m.recipient, payload))  # type: ignore[attr-defined]
        return out

    def start(self, value: bytes) -> list[tuple[int, object]]:
        return self._out(self._p.start(value))

    def on_message(self, sender: int, payload: object) -> list[tuple[int, object]]:
        key_ref: bytes | None = None
        if isinstance(payload, KeyedPayload):
            key_ref = payload.key_ref
            payload = payload.message
        if getattr(payload, "sender", None) != sender or not hasattr(payload, "triple"):
            return []
        t = payload.triple
        dealer = self._dealer
        if dealer is not None and key_ref is not None:
            if isinstance(payload, KeysRevealed):
                # Charlie could not reveal: the signer named her chunk twice (checked here)
                if dealer.check_reuse_proof(t, key_ref) and self._p.void(t):
                    self.voided += 1
                    self._waiting.discard((KeysRevealed, t, sender))
                    return []
            elif (
                isinstance(payload, SignedValue | Forwarded) and self._p.operation_error(t) is None
            ):
                dealer.learn(t, key_ref)
        try:
            out = self._out(self._p.on_message(payload))  # type: ignore[arg-type]
        except ChunkReused as exc:
            if dealer is None or not isinstance(payload, Forwarded):
                raise
            self._waiting.discard((type(payload), t, sender))
            proof = dealer.reuse_proof(t, exc.evidence)
            return [(t.bob, KeyedPayload(KeysRevealed(t, self._p.me, t.bob, 0, 0), proof))]
        self._waiting.discard((type(payload), t, sender))
        return out

    def end_round(self, k: int) -> list[tuple[int, object]]:
        return self._out(self._p.end_multicast_round(k))

    def output(self) -> bytes | None:
        return self._p.output()


class NodeQbaSessions:
    """The QbaSessionFactory of one node process: its own polynomials, and each operation's keys
    from its own QKD chunks (`dealers`) or, with `--qkd seeded`, from a shared seed."""

    def __init__(
        self,
        *,
        mode: QbaMode,
        f: int,
        secret: bytes,
        polys: PreparedPolynomials,
        params: QdsParams | None = None,
        dealers: Callable[[int, int], NetworkTripleDealer | None] | None = None,
    ) -> None:
        self.mode = mode
        self.f = f
        self._secret = secret
        self._polys = polys
        self._params = params or QdsParams()
        self._dealers = dealers
        self.sessions = 0

    def __call__(
        self,
        *,
        node_id: int,
        committee: Sequence[int],
        round: int,
        view: int,
        adversary: object | None,
    ) -> QbaSession:
        network = self._dealers(round, view) if self._dealers is not None else None
        dealer: object = (
            network
            if network is not None
            else SeededOperationKeys(self._secret, round=round, view=view, params=self._params)
        )
        participant = QbaParticipant(
            me=node_id,
            committee=committee,
            f=min(self.f, (len(committee) - 1) // 2),
            mode=self.mode,
            dealer=dealer,  # type: ignore[arg-type]
            polys=self._polys,
            adversary=adversary,  # type: ignore[arg-type]
            faulty=(node_id,) if adversary is not None else (),
        )
        self.sessions += 1
        return _Session(participant, network)


def seeded_secret(genesis_hash: bytes) -> bytes:
    """The shared seed of `--qkd seeded` for one network (public: see SeededOperationKeys)."""
    return blake3.blake3(b"qbfl/seeded-qkd/v1/" + genesis_hash).digest()
