"""GrpcTransport: a node's outbound messages to its peers, signed, with deadlines and bounded retries.

The in-memory transport (qbfl.consensus.inmemory) is the other implementation of the same three
operations (send, broadcast, set_timer). Calls are asynchronous (gRPC futures), so the event loop
never waits for a peer; a peer that is down gets retries with exponential backoff until the
message's deadline, and at most MAX_IN_FLIGHT messages queued, after which new ones are dropped
and counted (the protocol's timers and catch-up cover a lost message).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

import grpc

from qbfl._proto.v1 import common_pb2, node_pb2_grpc
from qbfl.consensus.envelope import MessageKind
from qbfl.consensus.events import Message, SyncBlocksReceived, TimerKind
from qbfl.consensus.wire import SyncRequest, SyncResponse
from qbfl.errors import QbflError
from qbfl.ledger.signer import Signer
from qbfl.net.channel import insecure_channel
from qbfl.net.serde import (
    ANY_RECIPIENT,
    MULTICAST_KINDS,
    decode_message,
    envelope_from_proto,
    envelope_to_proto,
    kind_of,
)
from qbfl.node.loop import Ticker

log = logging.getLogger("qbfl.node.transport")

_RPC = {
    MessageKind.SUBMISSION: "SubmitUpdate",
    MessageKind.PROPOSAL: "Propose",
    MessageKind.QBA: "Qba",
    MessageKind.VOTE: "Vote",
    MessageKind.BLOCK: "AnnounceBlock",
}
# Codes after which the same message may succeed later; any other rejection is final.
RETRYABLE = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    }
)
MAX_IN_FLIGHT = 512  # per peer
CALL_DEADLINE_S = 10.0  # one attempt
MESSAGE_LIFETIME_S = 60.0  # retries stop after this; the round has moved on by then
BACKOFF_S = (0.05, 0.2, 0.5, 1.0, 2.0, 4.0)


class GrpcTransport:
    """Sends the runtime's Send/Broadcast effects to peers over gRPC and feeds back sync answers."""

    def __init__(
        self,
        *,
        me: int,
        key: Signer,
        network: bytes,
        addresses: Mapping[int, str],
        public_keys: Mapping[int, bytes],
        ticker: Ticker,
        deliver_sync: Callable[[SyncBlocksReceived], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._me = me
        self._key = key
        self._network = network
        self._addresses = {i: a for i, a in addresses.items() if i != me}
        self._keys = dict(public_keys)
        self._ticker = ticker
        self._deliver_sync = deliver_sync
        self._clock = clock
        self._stubs: dict[int, node_pb2_grpc.NodeStub] = {}
        self._channels: dict[int, grpc.Channel] = {}
        self._in_flight: Counter[int] = Counter()
        self._lock = threading.Lock()
        self.counters: Counter[str] = Counter()
        self._multicasts: dict[tuple[MessageKind, int], tuple[Message, common_pb2.Envelope]] = {}
        self.disconnected_until = 0.0  # a perturbation: drop all peer traffic until then

    @property
    def peers(self) -> list[int]:
        return sorted(self._addresses)

    def close(self) -> None:
        with self._lock:
            for channel in self._channels.values():
                channel.close()
            self._channels.clear()
            self._stubs.clear()

    def disconnected(self) -> bool:
        return self._clock() < self.disconnected_until

    # --- the Transport interface ------------------------------------------------------------------

    def send(self, to: int, message: Message) -> None:
        if to == self._me or to not in self._addresses:
            return
        kind = kind_of(message)
        if kind is MessageKind.SYNC_REQUEST:
            assert isinstance(message, SyncRequest)
            self._fetch(to, message)
            return
        if kind in MULTICAST_KINDS:
            envelope = self._multicast(kind, message)
        else:
            envelope = self._seal(kind, to, message.encode())
        self._start(to, kind, envelope, self._clock() + MESSAGE_LIFETIME_S, 0)

    def broadcast(self, message: Message) -> None:
        kind = kind_of(message)
        if kind in MULTICAST_KINDS:
            envelope = self._multicast(kind, message)
            for to in self._addresses:
                self._start(to, kind, envelope, self._clock() + MESSAGE_LIFETIME_S, 0)
            return
        body = message.encode()
        for to in self._addresses:
            self._start(to, kind, self._seal(kind, to, body), self._clock() + MESSAGE_LIFETIME_S, 0)

    def _multicast(self, kind: MessageKind, message: Message) -> common_pb2.Envelope:
        """One envelope (one signature) for every recipient of a multicast kind, kept for the
        next sends of the same message (a client's submission goes to each member in turn)."""
        key = (kind, id(message))
        held = self._multicasts.get(key)
        if held is not None and held[0] is message:
            return held[1]
        envelope = self._seal(kind, ANY_RECIPIENT, message.encode())
        if len(self._multicasts) >= 64:
            self._multicasts.pop(next(iter(self._multicasts)))
        self._multicasts[key] = (message, envelope)
        return envelope

    def set_timer(
        self, kind: TimerKind, round: int, view: int, delay_s: float, seq: int = 0
    ) -> None:
        self._ticker.schedule(kind, round, view, delay_s, seq)

    # --- calls ------------------------------------------------------------------------------------

    def _seal(self, kind: MessageKind, to: int, body: bytes) -> common_pb2.Envelope:
        return envelope_to_proto(
            self._key, network=self._network, kind=kind, sender=self._me, recipient=to, body=body
        )

    def _stub(self, peer: int) -> node_pb2_grpc.NodeStub:
        with self._lock:
            stub = self._stubs.get(peer)
            if stub is None:
                channel = insecure_channel(self._addresses[peer])
                self._channels[peer] = channel
                stub = self._stubs[peer] = node_pb2_grpc.NodeStub(channel)
            return stub

    def _start(
        self,
        to: int,
        kind: MessageKind,
        envelope: common_pb2.Envelope,
        expires: float,
        attempt: int,
    ) -> None:
        # The first attempt takes the peer's in-flight slot; whichever attempt ends the message
        # (sent, failed for good, or dropped on a retry) gives it back.
        if self.disconnected():
            self.counters["dropped:disconnected"] += 1
            if attempt > 0:
                self._release(to)
            return
        with self._lock:
            if attempt == 0 and self._in_flight[to] >= MAX_IN_FLIGHT:
                self.counters["dropped:peer_backlog"] += 1
                return
            if attempt == 0:
                self._in_flight[to] += 1
        try:
            method: Any = getattr(self._stub(to), _RPC[kind])
            future = method.future(envelope, timeout=CALL_DEADLINE_S)
        except Exception:  # a channel closed under us (shutdown): the message ends here
            self.counters[f"failed:{kind.value}:not_started"] += 1
            self._release(to)
            raise
        future.add_done_callback(lambda f: self._done(f, to, kind, envelope, expires, attempt))

    def _release(self, to: int) -> None:
        with self._lock:
            self._in_flight[to] -= 1

    def in_flight(self, to: int) -> int:
        """Messages to `to` that have not ended yet (sent, failed or dropped)."""
        with self._lock:
            return self._in_flight[to]

    def _done(
        self,
        future: grpc.Future,
        to: int,
        kind: MessageKind,
        envelope: common_pb2.Envelope,
        expires: float,
        attempt: int,
    ) -> None:
        code = future.code()
        if code is grpc.StatusCode.OK:
            self.counters[f"sent:{kind.value}"] += 1
        elif code in RETRYABLE and attempt + 1 < len(BACKOFF_S) and self._clock() < expires:
            self.counters[f"retry:{kind.value}"] += 1
            delay = BACKOFF_S[attempt]
            self._ticker.call_later(
                delay, lambda: self._start(to, kind, envelope, expires, attempt + 1)
            )
            return
        else:
            self.counters[f"failed:{kind.value}:{code.name}"] += 1
            level = (
                logging.DEBUG
                if code in RETRYABLE or code is grpc.StatusCode.FAILED_PRECONDITION
                else logging.INFO
            )
            log.log(
                level,
                "node %d → %d %s: %s %s",
                self._me,
                to,
                kind.value,
                code.name,
                future.details(),
            )
        self._release(to)

    # --- catch-up ---------------------------------------------------------------------------------

    def _fetch(self, peer: int, request: SyncRequest) -> None:
        if self.disconnected():
            return
        envelope = self._seal(MessageKind.SYNC_REQUEST, peer, request.encode())
        future = self._stub(peer).FetchBlocks.future(envelope, timeout=30.0)
        future.add_done_callback(lambda f: self._fetched(f, peer))

    def _fetched(self, future: grpc.Future, peer: int) -> None:
        if future.code() is not grpc.StatusCode.OK:
            self.counters[f"failed:sync:{future.code().name}"] += 1
            return
        try:
            received = envelope_from_proto(
                future.result(),
                public_keys=self._keys,
                network=self._network,
                kind=MessageKind.SYNC_RESPONSE,
                me=self._me,
            )
            if received.sender != peer:
                raise ValueError(f"sync answer from {peer} signed by {received.sender}")
            response = decode_message(MessageKind.SYNC_RESPONSE, received.body)
        except Exception as exc:  # a bad answer is the peer's fault: count it, do not apply it
            self.counters["rejected:sync_response"] += 1
            log.info("node %d: rejected sync answer from %d: %s", self._me, peer, exc)
            return
        assert isinstance(response, SyncResponse)
        self._deliver_sync(SyncBlocksReceived(peer, response))

    def fetch_now(self, peer: int, from_height: int) -> SyncResponse | None:
        """A blocking FetchBlocks (start-up sync): the peer's blocks from `from_height`, or None."""
        envelope = self._seal(MessageKind.SYNC_REQUEST, peer, SyncRequest(from_height).encode())
        try:
            reply = self._stub(peer).FetchBlocks(envelope, timeout=30.0)
            received = envelope_from_proto(
                reply,
                public_keys=self._keys,
                network=self._network,
                kind=MessageKind.SYNC_RESPONSE,
                me=self._me,
            )
            response = decode_message(MessageKind.SYNC_RESPONSE, received.body)
        except grpc.RpcError as exc:
            log.debug("node %d: start-up sync from %d: %s", self._me, peer, exc.code().name)  # type: ignore[attr-defined]
            return None
        except QbflError as exc:
            log.info("node %d: start-up sync answer from %d rejected: %s", self._me, peer, exc)
            return None
        assert isinstance(response, SyncResponse)
        return response if received.sender == peer else None
