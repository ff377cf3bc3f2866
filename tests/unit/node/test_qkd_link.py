"""BB84 sessions between two nodes over a real gRPC stream: same chunks at both ends, receipts,
one-time use, and an eavesdropped link that aborts and keeps nothing."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from typing import Any

import pytest

from qbfl._proto.v1 import node_pb2_grpc
from qbfl.consensus.envelope import MessageKind
from qbfl.crypto.keychunks import ChunkUnavailable, ReceiptCache
from qbfl.crypto.signing import SigningKey
from qbfl.net.channel import server as grpc_server
from qbfl.net.serde import envelope_from_proto
from qbfl.node.qkdlink import QkdLinks

NETWORK = b"\x07" * 32


class _Edge(node_pb2_grpc.NodeServicer):
    def __init__(self) -> None:
        self.links: QkdLinks | None = None

    def QkdSession(self, request_iterator: Any, context: Any) -> Any:
        assert self.links is not None
        first = next(request_iterator)
        yield from self.links.serve(itertools.chain([first], request_iterator), first.sender)


def _pair(tapped: bool = False, qubits: int = 20_000) -> Iterator[tuple[QkdLinks, QkdLinks]]:
    keys = {i: SigningKey.from_seed(bytes([60 + i]) * 32) for i in (3, 8)}
    public = {i: k.public_key for i, k in keys.items()}
    edges, servers, addresses = {}, [], {}
    for i in (3, 8):
        edges[i] = _Edge()
        server = grpc_server(8)
        node_pb2_grpc.add_NodeServicer_to_server(edges[i], server)
        addresses[i] = f"127.0.0.1:{server.add_insecure_port('127.0.0.1:0')}"
        server.start()
        servers.append(server)
    links = {}
    for i in (3, 8):
        me = i

        def auth(envelope: Any, kind: MessageKind, me: int = me) -> Any:
            return envelope_from_proto(
                envelope, public_keys=public, network=NETWORK, kind=kind, me=me
            )

        links[i] = edges[i].links = QkdLinks(
            me=i,
            key=keys[i],
            network=NETWORK,
            addresses=addresses,
            public_keys=public,
            authenticate=auth,
            tapped=frozenset({8 if i == 3 else 3}) if tapped else frozenset(),
            qubits=qubits,
        )
    yield links[3], links[8]
    for s in servers:
        s.stop(0)


@pytest.fixture
def pair() -> Iterator[tuple[QkdLinks, QkdLinks]]:
    yield from _pair()


def test_a_session_gives_both_ends_the_same_committed_chunks(pair) -> None:  # type: ignore[no-untyped-def]
    low, high = pair
    assert low.wait_for(8, 4, timeout_s=30)
    assert high.wait_for(3, 4, timeout_s=30)
    a, b = low.store(8), high.store(3)
    assert a is not None and b is not None and a.epochs == b.epochs
    deadline = time.monotonic() + 20  # high's own wait may have started one more session
    while (a.sessions, a.next_index) != (b.sessions, b.next_index) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert a.sessions == b.sessions >= 1 and a.next_index == b.next_index
    bits, ref = a.allocate()  # low signs with an even chunk …
    revealed, ref_b = b.reveal(ref.index)  # … that high can reveal once
    assert revealed == bits and ref_b == ref
    with pytest.raises(ChunkUnavailable):
        b.reveal(ref.index)
    receipt, commitment = ReceiptCache(low.public_keys).commitment_of(ref)
    assert receipt.pair == (3, 8) and len(commitment) == 16
    deadline = time.monotonic() + 10  # the session's statistics land just after its keys
    while low.status()["links"]["8"]["sessions"] < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    status = low.status()
    assert status["links"]["8"]["sessions"] >= 1 and status["stock_bits"]["8"] > 0


def test_an_eavesdropped_link_aborts_and_keeps_no_key(caplog) -> None:  # type: ignore[no-untyped-def]
    for low, high in _pair(tapped=True):
        assert not low.wait_for(8, 1, timeout_s=30)
        assert low.stock(8) == 0 and high.stock(3) == 0
        assert (
            low.status()["links"]["8"]["compromised"] or high.status()["links"]["3"]["compromised"]
        )
    assert "COMPROMISED" in caplog.text and "QBER" in caplog.text


def test_a_stream_that_ends_mid_session_is_an_abort_not_a_crash(pair) -> None:  # type: ignore[no-untyped-def]
    """On the responder's side gRPC raises a bare RpcError (no status code) when the opener dies
    mid-session; it must end the session as an abort, not crash the serving thread."""
    import grpc

    from qbfl.errors import QkdAborted

    low, _ = pair

    def dying() -> Iterator[Any]:
        raise grpc.RpcError()
        yield

    with pytest.raises(QkdAborted, match="the QKD stream with 8 broke: CANCELLED"):
        list(low._frames_from(dying(), 8))
