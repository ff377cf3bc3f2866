"""Thin gRPC servicers of a node: authenticate, decode, hand to the event loop, map errors to codes.

Every rejected call leaves the node unchanged: authentication and decoding happen before the
event loop sees anything, and the state machine validates before it mutates (docs/network.md
lists the codes).
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Callable
from typing import Any, Protocol

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from qbfl._proto.v1 import common_pb2, node_pb2, node_pb2_grpc
from qbfl.consensus.catchup import MAX_SYNC_BLOCKS
from qbfl.consensus.envelope import MessageKind
from qbfl.consensus.events import Message
from qbfl.consensus.wire import InvalidMessage, SyncRequest, SyncResponse
from qbfl.errors import QbflError
from qbfl.ledger.block import Block
from qbfl.ledger.store import LedgerStore
from qbfl.net.channel import SYNC_RESPONSE_BYTES
from qbfl.net.channel import server as grpc_server
from qbfl.net.serde import (
    Received,
    decode_message,
    envelope_from_proto,
    envelope_to_proto,
)
from qbfl.net.status import NotReady, status_for

log = logging.getLogger("qbfl.node.rpc")

SERVICE_NAMES = ("", "qbfl.v1.Node", "qbfl.v1.Ledger")  # what grpc.health.v1 answers for


class NodeEdge(Protocol):
    """What the servicers need from the running node (qbfl.node.process.NodeShell)."""

    node_id: int
    counters: Counter[str]

    def ready(self) -> bool: ...

    def accepting(self) -> bool: ...

    def authenticate(self, envelope: common_pb2.Envelope, kind: MessageKind) -> Received: ...

    def deliver(self, sender: int, message: Message) -> str: ...

    def seal(self, kind: MessageKind, to: int, body: bytes) -> common_pb2.Envelope: ...

    def store(self) -> LedgerStore: ...

    def status(self) -> dict[str, Any]: ...

    def qkd_session(self, requests: Any, context: grpc.ServicerContext) -> Any: ...


def blocks_from(store: LedgerStore, from_height: int) -> tuple[Block, ...]:
    """Stored blocks from `from_height`: at most MAX_SYNC_BLOCKS and SYNC_RESPONSE_BYTES of them."""
    if from_height < 1:
        raise SyncRangeError("sync starts at height 1")
    stop = min(store.height, from_height + MAX_SYNC_BLOCKS - 1)
    out: list[Block] = []
    size = 0
    for block in store.range(from_height, stop + 1) if stop >= from_height else []:
        size += len(block.update) + 16_384
        if out and size > SYNC_RESPONSE_BYTES:
            break
        out.append(block)
    return tuple(out)


class SyncRangeError(InvalidMessage):
    """A sync request for a height that cannot exist."""


class NodeServicer(node_pb2_grpc.NodeServicer):
    def __init__(self, edge: NodeEdge) -> None:
        self._edge = edge

    def _abort(self, context: grpc.ServicerContext, exc: BaseException, kind: MessageKind) -> Any:
        code = status_for(exc)
        self._edge.counters[f"rejected:{kind.value}:{code.name}"] += 1
        if code is grpc.StatusCode.INTERNAL:
            log.exception("node %d: internal error on %s", self._edge.node_id, kind.value)
        context.abort(code, f"{type(exc).__name__}: {exc}")

    def _one_way(
        self, kind: MessageKind, request: common_pb2.Envelope, context: grpc.ServicerContext
    ) -> common_pb2.Ack:
        edge = self._edge
        try:
            if not edge.ready():
                raise NotReady("the node has not verified its genesis yet")
            if not edge.accepting():
                raise NotReady("the node is disconnected from its peers (perturbation)")
            received = edge.authenticate(request, kind)
            message = decode_message(kind, received.body)
            outcome = edge.deliver(received.sender, message)
        except Exception as exc:
            return self._abort(context, exc, kind)  # type: ignore[no-any-return]
        edge.counters[f"received:{kind.value}"] += 1
        return common_pb2.Ack(outcome=outcome)

    def SubmitUpdate(self, request: Any, context: Any) -> Any:
        return self._one_way(MessageKind.SUBMISSION, request, context)

    def Propose(self, request: Any, context: Any) -> Any:
        return self._one_way(MessageKind.PROPOSAL, request, context)

    def Qba(self, request: Any, context: Any) -> Any:
        return self._one_way(MessageKind.QBA, request, context)

    def Vote(self, request: Any, context: Any) -> Any:
        return self._one_way(MessageKind.VOTE, request, context)

    def AnnounceBlock(self, request: Any, context: Any) -> Any:
        return self._one_way(MessageKind.BLOCK, request, context)

    def FetchBlocks(self, request: Any, context: Any) -> Any:
        edge = self._edge
        kind = MessageKind.SYNC_REQUEST
        try:
            if not edge.ready():
                raise NotReady("the node has not verified its genesis yet")
            if not edge.accepting():
                raise NotReady("the node is disconnected from its peers (perturbation)")
            received = edge.authenticate(request, kind)
            sync = decode_message(kind, received.body)
            assert isinstance(sync, SyncRequest)
            blocks = blocks_from(edge.store(), sync.from_height)
            body = SyncResponse(blocks).encode()
        except Exception as exc:
            return self._abort(context, exc, kind)
        edge.counters["received:sync-request"] += 1
        return edge.seal(MessageKind.SYNC_RESPONSE, received.sender, body)

    def QkdSession(self, request_iterator: Any, context: Any) -> Any:
        return self._edge.qkd_session(request_iterator, context)


class LedgerServicer(node_pb2_grpc.LedgerServicer):
    """Read-only, unauthenticated: status and public blocks for operators and observers."""

    def __init__(self, edge: NodeEdge) -> None:
        self._edge = edge

    def Status(self, request: Any, context: Any) -> Any:
        return node_pb2.StatusReply(json=json.dumps(self._edge.status(), sort_keys=True))

    def Blocks(self, request: Any, context: Any) -> Any:
        try:
            store = self._edge.store()
            blocks = blocks_from(store, max(1, request.from_height))
        except Exception as exc:
            context.abort(status_for(exc), f"{type(exc).__name__}: {exc}")
        return node_pb2.BlocksReply(blocks=[b.encode() for b in blocks], height=store.height)


def authenticator(
    *,
    me: int,
    public_keys: Callable[[], dict[int, bytes]],
    network: Callable[[], bytes],
) -> Callable[[common_pb2.Envelope, MessageKind], Received]:
    """Envelope authentication against the roster and network id known once genesis is verified."""

    def authenticate(envelope: common_pb2.Envelope, kind: MessageKind) -> Received:
        return envelope_from_proto(
            envelope, public_keys=public_keys(), network=network(), kind=kind, me=me
        )

    return authenticate


__all__ = [
    "LedgerServicer",
    "NodeServicer",
    "authenticator",
    "blocks_from",
    "envelope_to_proto",
]


class NodeServer:
    """A node's gRPC server: Node, Ledger and grpc.health.v1, which answers NOT_SERVING until
    `serving(True)` (the genesis verified) and again from `serving(False)` on (shutdown)."""

    def __init__(self, edge: NodeEdge, listen_address: str) -> None:
        self.health = health.HealthServicer()
        self.serving(False)
        self.server = grpc_server()
        node_pb2_grpc.add_NodeServicer_to_server(NodeServicer(edge), self.server)
        node_pb2_grpc.add_LedgerServicer_to_server(LedgerServicer(edge), self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        try:
            bound = self.server.add_insecure_port(listen_address)
        except RuntimeError:
            bound = 0
        if not bound:
            raise QbflError(
                f"cannot listen on {listen_address}: the port is in use (another node "
                "with this id?) — stop it, or pass --listen HOST:PORT"
            )
        self.server.start()

    def serving(self, yes: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if yes
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in SERVICE_NAMES:
            self.health.set(name, status)

    def stop(self) -> None:
        self.serving(False)
        self.server.stop(grace=2.0).wait(3.0)
