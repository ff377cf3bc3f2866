"""Client-side calls an operator makes to a running node: status and public blocks."""

from __future__ import annotations

import json
import threading
from typing import Any

import grpc

from qbfl._proto.v1 import node_pb2, node_pb2_grpc
from qbfl.errors import QbflError
from qbfl.ledger.block import Block
from qbfl.net.channel import insecure_channel


class NodeUnreachable(QbflError):
    """A node did not answer a status or blocks request."""


_STUBS: dict[str, node_pb2_grpc.LedgerStub] = {}
_LOCK = threading.Lock()


def _ledger(address: str) -> node_pb2_grpc.LedgerStub:
    """One channel per node address for the life of the process: an observer polling 50 nodes
    every few seconds would otherwise open 50 TCP connections each time."""
    with _LOCK:
        stub = _STUBS.get(address)
        if stub is None:
            stub = _STUBS[address] = node_pb2_grpc.LedgerStub(insecure_channel(address))
        return stub


def node_status(address: str, *, timeout: float = 5.0) -> dict[str, Any]:
    try:
        reply = _ledger(address).Status(node_pb2.StatusRequest(), timeout=timeout)
    except grpc.RpcError as exc:
        raise NodeUnreachable(f"node at {address}: {exc.code().name} {exc.details()}") from exc  # type: ignore[attr-defined]
    doc: dict[str, Any] = json.loads(reply.json)
    return doc


def node_blocks(
    address: str, from_height: int, *, timeout: float = 10.0
) -> tuple[list[Block], int]:
    """(blocks from `from_height`, at most 64; the node's height). Blocks are NOT verified here."""
    try:
        reply = _ledger(address).Blocks(
            node_pb2.BlocksRequest(from_height=from_height), timeout=timeout
        )
    except grpc.RpcError as exc:
        raise NodeUnreachable(f"node at {address}: {exc.code().name} {exc.details()}") from exc  # type: ignore[attr-defined]
    return [Block.decode(raw) for raw in reply.blocks], int(reply.height)
