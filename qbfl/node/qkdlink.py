"""BB84 between two node processes: one gRPC stream per session carries both the simulated quantum
channel and the classical post-processing; each node keeps a one-time key store per peer.

A session (DESIGN §6, issue 11 item 4):

1. HELLO (signed): both endpoints' epochs (random per process start) and the next chunk index
   each holds; the session's chunks start at the larger one, so an index is never reused.
2. PHOTONS: Alice (the lower id) sends her prepared bits and bases. The channel acts on arrival
   at Bob: an intercept-resend eavesdropper if this link is tapped (either endpoint's
   --eavesdrop), then bit flips at the link's error rate and photon loss.
3. The existing BB84 post-processing (bases, QBER sample, Cascade, verification tag, privacy
   amplification seed) as classical frames. A QBER above 11 % aborts: the link is logged as
   compromised and keeps no key.
4. RECEIPT (signed): each endpoint cuts the key into chunks, commits to them, and signs the
   Merkle root together with the hash of the whole transcript as it saw it; a tampered classical
   frame makes the transcripts — and so the signatures — disagree, and the key is dropped.
   The low id signs first; the high id stores and answers with its signature; the low id stores
   and sends ACK, after which the high id may sign with the new chunks too (a signer only uses
   chunks its peer already holds).
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import blake3
import grpc
import numpy as np

from qbfl._proto.v1 import common_pb2, node_pb2_grpc
from qbfl.consensus.envelope import MessageKind
from qbfl.crypto.bb84 import BB84Config, Photons, apply_channel, run_alice, run_bob
from qbfl.crypto.keychunks import KeyReceipt, PairKeyStore, ReceiptCache
from qbfl.crypto.qkd import LinkMessage, LinkStep, pack_bits, unpack_bits
from qbfl.errors import KeyPoolExhausted, QbflError, QkdAborted
from qbfl.ledger.encoding import CanonicalRecord, Field, FieldKind, RecordSchema
from qbfl.ledger.signer import Signer
from qbfl.net.channel import insecure_channel
from qbfl.net.serde import Received, envelope_to_proto
from qbfl.node.memory import trim

log = logging.getLogger("qbfl.qkd")

HELLO, PHOTONS, RECEIPT, ACK, ABORT = 100, 101, 102, 103, 104
SESSION_QUBITS = 200_000  # ~65 kbit of final key at 1 % error: ~170 chunks, ~14 rounds as leader
CHANNEL_ERROR = 0.01
CHANNEL_LOSS = 0.0
FRAME_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class QkdFrame(CanonicalRecord):
    """One frame of a session's stream: a BB84 step (1–9) or a session step (HELLO … ABORT)."""

    step: int
    payload: bytes

    SCHEMA: ClassVar[RecordSchema] = RecordSchema(
        36,
        "QkdFrame",
        (Field(1, "step", FieldKind.UINT), Field(2, "payload", FieldKind.BYTES, max_len=8 << 20)),
    )


@dataclass(frozen=True)
class QkdHello(CanonicalRecord):
    low: int
    high: int
    epoch: bytes  # the sender's epoch
    peer_epoch: bytes  # the epoch the sender holds for its peer (b"" if none)
    next_index: int
    tapped: bool  # the sender was told its quantum channel with the peer is eavesdropped

    SCHEMA: ClassVar[RecordSchema] = RecordSchema(
        37,
        "QkdHello",
        (
            Field(1, "low", FieldKind.UINT),
            Field(2, "high", FieldKind.UINT),
            Field(3, "epoch", FieldKind.BYTES, max_len=16),
            Field(4, "peer_epoch", FieldKind.BYTES, max_len=16),
            Field(5, "next_index", FieldKind.UINT),
            Field(6, "tapped", FieldKind.BOOL),
        ),
    )


class LinkCompromised(QkdAborted):
    """Sessions on this link keep aborting (QBER too high): an eavesdropper, or too much noise."""


@dataclass
class LinkStats:
    sessions: int = 0
    aborted: int = 0
    last_qber: float | None = None
    last_error: str | None = None
    seconds: float = 0.0
    bits: int = 0
    compromised_since: float | None = None


class _Frames:
    """The classical and quantum endpoints of one session over a stream, with a transcript hash.

    `outbox` feeds the stream we send on; `inbox` yields the frames the peer sent (already
    authenticated where signed). Every frame sent or received, in order, goes into the transcript.
    """

    def __init__(self, outbox: queue.Queue[Any], inbox: Iterator[QkdFrame]) -> None:
        self._outbox = outbox
        self._inbox = inbox
        self.sent = blake3.blake3()
        self.received = blake3.blake3()
        self.bytes_sent = 0

    # ClassicalChannel
    def send(self, message: LinkMessage) -> None:
        self.put(QkdFrame(message.step.value, message.payload))

    def recv(self) -> LinkMessage:
        frame = self.get()
        try:
            step = LinkStep(frame.step)
        except ValueError:
            raise QkdAborted(f"protocol error: frame step {frame.step} during BB84") from None
        return LinkMessage(step, frame.payload)

    def put(self, frame: QkdFrame, signed: bool = False) -> None:
        raw = frame.encode()
        self.sent.update(raw)
        self.bytes_sent += len(raw)
        self._outbox.put((frame, signed))

    def get(self) -> QkdFrame:
        try:
            frame = next(self._inbox)
        except StopIteration:
            raise QkdAborted("the peer closed the QKD stream") from None
        if frame.step == ABORT:
            raise QkdAborted(
                f"the peer aborted the session: {frame.payload.decode(errors='replace')}"
            )
        self.received.update(frame.encode())
        return frame

    def transcript(self, alice: bool) -> bytes:
        """The same 32 bytes at both endpoints iff each saw exactly the frames the other sent."""
        a, b = (self.sent, self.received) if alice else (self.received, self.sent)
        return blake3.blake3(a.digest() + b.digest()).digest()


class _QuantumOut:
    """Alice's side of the simulated quantum channel: the prepared states go into the stream."""

    def __init__(self, frames: _Frames) -> None:
        self._frames = frames

    def transmit(self, bits: np.ndarray, bases: np.ndarray) -> None:
        self._frames.put(QkdFrame(PHOTONS, pack_bits(bits) + pack_bits(bases)))

    def receive(self, timeout_s: float = 30.0) -> Photons:
        raise QkdAborted("Alice's end of the quantum channel only transmits")

    def close(self) -> None:
        pass


class _QuantumIn:
    """Bob's side: the states arrive, and the channel (Eve, noise, loss) acts on them here."""

    def __init__(
        self,
        frames: _Frames,
        n: int,
        rng: np.random.Generator,
        *,
        tapped: bool,
        error: float,
        loss: float,
    ) -> None:
        self._frames, self._n, self._rng = frames, n, rng
        self._tapped, self._error, self._loss = tapped, error, loss

    def transmit(self, bits: np.ndarray, bases: np.ndarray) -> None:
        raise QkdAborted("Bob's end of the quantum channel only receives")

    def close(self) -> None:
        pass

    def receive(self, timeout_s: float = 30.0) -> Photons:
        frame = self._frames.get()
        width = (self._n + 7) // 8
        if frame.step != PHOTONS or len(frame.payload) != 2 * width:
            raise QkdAborted("protocol error: expected the photons of this session")
        bits = unpack_bits(frame.payload[:width], self._n)
        bases = unpack_bits(frame.payload[width:], self._n)
        return apply_channel(
            Photons(bits, bases),
            self._rng,
            error_rate=self._error,
            loss=self._loss,
            eavesdropper=self._tapped,
        )


@dataclass
class QkdLinks:
    """All of one node's QKD links: key stores per peer, sessions on demand, stock status."""

    me: int
    key: Signer
    network: bytes
    addresses: Mapping[int, str]
    public_keys: Mapping[int, bytes]
    authenticate: Callable[[common_pb2.Envelope, MessageKind], Received]
    tapped: frozenset[int] = frozenset()
    qubits: int = SESSION_QUBITS
    error_rate: float = CHANNEL_ERROR
    loss: float = CHANNEL_LOSS
    epoch: bytes = field(default_factory=lambda: secrets.token_bytes(16))
    stores: dict[int, PairKeyStore] = field(default_factory=dict)
    stats: dict[int, LinkStats] = field(default_factory=dict)
    receipts: ReceiptCache | None = None

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._busy: set[int] = set()
        self._done = threading.Condition(self._lock)
        self._stubs: dict[int, node_pb2_grpc.NodeStub] = {}
        self._channels: list[grpc.Channel] = []
        self.receipts = ReceiptCache(self.public_keys)

    # --- stock ------------------------------------------------------------------------------------

    def store(self, peer: int) -> PairKeyStore | None:
        with self._lock:
            return self.stores.get(peer)

    def stock(self, peer: int) -> int:
        store = self.store(peer)
        return store.stock if store is not None else 0

    def status(self) -> dict[str, Any]:
        with self._lock:
            peers = sorted(set(self.stores) | set(self.stats))
        return {
            "epoch": self.epoch.hex(),
            "stock_bits": {str(p): self.stock(p) * 384 for p in peers},
            "links": {
                str(p): {
                    "sessions": s.sessions,
                    "aborted": s.aborted,
                    "last_qber": s.last_qber,
                    "compromised": s.compromised_since is not None,
                    "last_error": s.last_error,
                    "key_bits": s.bits,
                    "session_seconds": round(s.seconds, 3),
                }
                for p, s in ((p, self.stats.get(p, LinkStats())) for p in peers)
            },
        }

    def ensure(self, peer: int, chunks: int) -> None:
        """Start a session with `peer` in the background if this node's half holds < `chunks`."""
        if peer == self.me or peer not in self.addresses or self.stock(peer) >= chunks:
            return
        with self._lock:
            if peer in self._busy:
                return
            stats = self.stats.setdefault(peer, LinkStats())
            if (
                stats.compromised_since is not None
                and time.monotonic() - stats.compromised_since < 30
            ):
                return  # a tapped link is retried every 30 s, not hammered
            self._busy.add(peer)
        threading.Thread(
            target=self._run_opener, args=(peer,), name=f"qkd-{peer}", daemon=True
        ).start()

    def wait_for(self, peer: int, chunks: int, timeout_s: float) -> bool:
        """Block until this node can sign `chunks` times with `peer` (starting sessions as needed)."""
        deadline = time.monotonic() + timeout_s
        while self.stock(peer) < chunks:
            self.ensure(peer, chunks)
            with self._done:
                compromised = self.stats.get(peer, LinkStats()).compromised_since is not None
                if compromised and peer not in self._busy:
                    return False
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._done.wait(min(remaining, 0.5))
        return True

    def close(self) -> None:
        for channel in self._channels:
            channel.close()

    # --- sessions ---------------------------------------------------------------------------------

    def _stub(self, peer: int) -> node_pb2_grpc.NodeStub:
        with self._lock:
            stub = self._stubs.get(peer)
            if stub is None:
                channel = insecure_channel(self.addresses[peer])
                self._channels.append(channel)
                stub = self._stubs[peer] = node_pb2_grpc.NodeStub(channel)
            return stub

    def _finish(self, peer: int) -> None:
        with self._done:
            self._busy.discard(peer)
            self._done.notify_all()

    def _envelope(self, peer: int, frame: QkdFrame, signed: bool) -> common_pb2.Envelope:
        body = frame.encode()
        if signed:
            return envelope_to_proto(
                self.key,
                network=self.network,
                kind=MessageKind.QKD,
                sender=self.me,
                recipient=peer,
                body=body,
            )
        return common_pb2.Envelope(sender=self.me, recipient=peer, body=body)

    def _frames_from(
        self, envelopes: Iterator[common_pb2.Envelope], peer: int
    ) -> Iterator[QkdFrame]:
        try:
            yield from self._checked_frames(envelopes, peer)
        except grpc.RpcError as exc:
            # A client-side error carries a status code; the server's request iterator raises a
            # bare RpcError when the peer's stream ends (the peer died or cancelled).
            code = exc.code().name if hasattr(exc, "code") else "CANCELLED"  # type: ignore[attr-defined]
            raise QkdAborted(f"the QKD stream with {peer} broke: {code}") from exc

    def _checked_frames(
        self, envelopes: Iterator[common_pb2.Envelope], peer: int
    ) -> Iterator[QkdFrame]:
        for envelope in envelopes:
            if envelope.sender != peer or envelope.recipient != self.me:
                raise QkdAborted(
                    f"a frame on the link with {peer} names {envelope.sender}→{envelope.recipient}"
                )
            frame = QkdFrame.decode(envelope.body)
            if frame.step in (HELLO, RECEIPT):  # the signed frames: who sent them is proven
                self.authenticate(envelope, MessageKind.QKD)
            yield frame

    def _run_opener(self, peer: int) -> None:
        outbox: queue.Queue[Any] = queue.Queue()

        def requests() -> Iterator[common_pb2.Envelope]:
            while True:
                item = outbox.get()
                if item is None:
                    return
                frame, signed = item
                yield self._envelope(peer, frame, signed)

        try:
            responses = self._stub(peer).QkdSession(requests(), timeout=120.0)
            frames = _Frames(outbox, self._frames_from(responses, peer))
            self._session(peer, frames)
            outbox.put(None)
            for _ in responses:  # until the responder ends the stream: our ACK has arrived
                pass
        except grpc.RpcError as exc:
            self._failed(peer, f"{exc.code().name}: {exc.details()}", aborted=False)  # type: ignore[attr-defined]
        except (QbflError, ValueError) as exc:
            self._failed(peer, str(exc), aborted=isinstance(exc, QkdAborted))
        finally:
            outbox.put(None)
            self._finish(peer)

    def serve(
        self, requests: Iterator[common_pb2.Envelope], peer: int
    ) -> Iterator[common_pb2.Envelope]:
        """The responder's side of a session opened by `peer` (the gRPC handler yields these)."""
        with self._lock:
            if peer in self._busy:
                raise QkdAborted(f"a session with {peer} is already running")
            self._busy.add(peer)
        outbox: queue.Queue[Any] = queue.Queue()

        def run() -> None:
            try:
                self._session(peer, _Frames(outbox, self._frames_from(requests, peer)))
            except (QbflError, ValueError) as exc:
                self._failed(peer, str(exc), aborted=isinstance(exc, QkdAborted))
                outbox.put((QkdFrame(ABORT, str(exc)[:200].encode()), False))
            finally:
                outbox.put(None)
                self._finish(peer)

        threading.Thread(target=run, name=f"qkd-serve-{peer}", daemon=True).start()
        while True:
            item = outbox.get()
            if item is None:
                return
            frame, signed = item
            yield self._envelope(peer, frame, signed)

    def _failed(self, peer: int, why: str, *, aborted: bool) -> None:
        with self._lock:
            stats = self.stats.setdefault(peer, LinkStats())
            stats.last_error = why
            if aborted:
                stats.aborted += 1
                if "QBER" in why and stats.compromised_since is None:
                    stats.compromised_since = time.monotonic()
                    log.error(
                        "QKD link %d–%d COMPROMISED: %s — no key is kept on this link; QBA "
                        "operations that need it fail and the view changes",
                        min(self.me, peer),
                        max(self.me, peer),
                        why,
                    )
                    return
        log.info("QKD session with %d failed: %s", peer, why)

    def _session(self, peer: int, frames: _Frames) -> None:
        started = time.monotonic()
        alice = self.me < peer
        low, high = (self.me, peer) if alice else (peer, self.me)
        held = self.store(peer)
        hello = QkdHello(
            low,
            high,
            self.epoch,
            (held.epochs[1] if alice else held.epochs[0]) if held is not None else b"",
            held.next_index if held is not None else 0,
            peer in self.tapped,
        )
        frames.put(QkdFrame(HELLO, hello.encode()), signed=True)
        theirs = QkdHello.decode(frames.get().payload)
        if (theirs.low, theirs.high) != (low, high) or len(theirs.epoch) != 16:
            raise QkdAborted(f"hello from {peer} names another pair")
        epochs = (self.epoch, theirs.epoch) if alice else (theirs.epoch, self.epoch)
        store = held if held is not None and held.epochs == epochs else None
        if store is None:  # a new pair of epochs (first session, or one end restarted)
            store = PairKeyStore(self.me, peer, self.epoch, theirs.epoch)
        # the session's chunks start past every index either end has used in these epochs
        first = max(store.next_index, theirs.next_index if theirs.peer_epoch == self.epoch else 0)
        config = BB84Config(n_qubits=self.qubits)
        rng = np.random.default_rng(secrets.randbits(128))
        if alice:
            result = run_alice(frames, _QuantumOut(frames), config, rng)
        else:
            quantum = _QuantumIn(
                frames,
                config.n_qubits,
                np.random.default_rng(secrets.randbits(128)),
                tapped=peer in self.tapped or theirs.tapped,
                error=self.error_rate,
                loss=self.loss,
            )
            result = run_bob(frames, quantum, config, rng)
        # receipts: each end signs what it holds, bound to the transcript it saw
        session = store.sessions
        transcript = frames.transcript(alice)
        receipt, chunks = store.cut(
            session, result.key, result.key_bits, first=first, transcript=transcript
        )
        mine = receipt.sign(self.key, self.me)
        if alice:
            frames.put(QkdFrame(RECEIPT, mine.encode()), signed=True)
            full = _merge(mine, KeyReceipt.decode(frames.get().payload), self.public_keys)
            store.add(full, chunks, confirmed=True)  # Bob stored them before he signed
            self._install(peer, store)
            frames.put(QkdFrame(ACK, b""))
        else:
            full = _merge(mine, KeyReceipt.decode(frames.get().payload), self.public_keys)
            store.add(full, chunks, confirmed=False)
            self._install(peer, store)  # Alice may name them as soon as she has our receipt
            frames.put(QkdFrame(RECEIPT, mine.encode()), signed=True)
            if frames.get().step != ACK:
                raise QkdAborted("no ACK after the receipts")
            store.confirm(session)
        trim()  # a session's photon arrays and FFT buffers, handed back
        with self._lock:
            stats = self.stats.setdefault(peer, LinkStats())
            stats.sessions += 1
            stats.last_qber = result.qber
            stats.bits += len(chunks) * 384
            stats.seconds += time.monotonic() - started
            stats.compromised_since = None
            stats.last_error = None

    def _install(self, peer: int, store: PairKeyStore) -> None:
        with self._done:
            self.stores[peer] = store
            self._done.notify_all()


def _merge(mine: KeyReceipt, theirs: KeyReceipt, public_keys: Mapping[int, bytes]) -> KeyReceipt:
    """The receipt with both signatures; QkdAborted unless the peer signed exactly what we hold."""
    if theirs.payload() != mine.payload():
        raise QkdAborted(
            "the peer's receipt differs from ours (different key, chunk range or transcript): "
            "the session's key is dropped"
        )
    full = dataclasses.replace(
        mine, sig_low=mine.sig_low or theirs.sig_low, sig_high=mine.sig_high or theirs.sig_high
    )
    full.verify(public_keys)
    return full


__all__ = ["KeyPoolExhausted", "LinkCompromised", "QkdFrame", "QkdHello", "QkdLinks"]
