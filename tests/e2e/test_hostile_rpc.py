"""Hostile calls to a live node get the right gRPC status, and change nothing.

A 4-node network commits block 1; the other three nodes are then paused (SIGSTOP), so node 0
cannot make progress on its own and any change to its ledger would come from the hostile calls.
Each call is answered with its status code; afterwards node 0 still serves, its height and head
are what they were, and its ledger file verifies.
"""

from __future__ import annotations

import dataclasses
import signal
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from qbfl._proto.v1 import common_pb2, node_pb2, node_pb2_grpc
from qbfl.consensus.envelope import MessageKind
from qbfl.consensus.wire import SyncRequest
from qbfl.ledger.block import UpdateSubmission
from qbfl.ledger.chain import Chain
from qbfl.ledger.store import SqliteLedgerStore
from qbfl.net.channel import MAX_MESSAGE_BYTES, insecure_channel
from qbfl.net.probe import node_status
from qbfl.net.serde import envelope_to_proto
from tests.e2e.livenet import LiveNetwork, live_network, wait_until


@pytest.fixture(scope="module")
def quiet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveNetwork, dict]]:
    out = tmp_path_factory.mktemp("hostile")
    with live_network(out, nodes=4, rounds=50, round_timeout_s=6.0, metrics=True) as net:
        wait_until(
            lambda: all(node_status(net.address(i))["height"] >= 1 for i in range(4)),
            120,
            "block 1 on every node",
        )
        for i in (1, 2, 3):
            net.backend.signal_node(i, signal.SIGSTOP)
        before = _settled(net.address(0))
        try:
            yield net, before
        finally:
            for i in (1, 2, 3):
                net.backend.signal_node(i, signal.SIGCONT)


def _settled(address: str, *, quiet_s: float = 3.0, limit_s: float = 60.0) -> dict:
    """Node 0's status once its height and head stop changing: a block or vote already in flight
    when the peers were paused may still land, and must not be blamed on the hostile calls."""
    deadline = time.monotonic() + limit_s
    status = node_status(address)
    since = time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.25)
        now = node_status(address)
        if (now["height"], now["head_hash"]) != (status["height"], status["head_hash"]):
            status, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            return now
    raise AssertionError(f"node 0 kept changing for {limit_s} s with its peers paused")


@pytest.fixture(scope="module")
def stub(quiet: tuple[LiveNetwork, dict]) -> Iterator[node_pb2_grpc.NodeStub]:
    net, _ = quiet
    channel = insecure_channel(net.address(0))
    yield node_pb2_grpc.NodeStub(channel)
    channel.close()


def _seal(
    net: LiveNetwork,
    kind: MessageKind,
    body: bytes,
    *,
    sender: int = 1,
    key_of: int | None = None,
    recipient: int = 0,
    network: bytes | None = None,
) -> common_pb2.Envelope:  # noqa: E501
    return envelope_to_proto(
        net.key(sender if key_of is None else key_of),
        network=net.genesis.block_hash if network is None else network,
        kind=kind,
        sender=sender,
        recipient=recipient,
        body=body,
    )


def _code(call) -> grpc.StatusCode:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value.code()  # type: ignore[no-any-return]


def _current(quiet: tuple[LiveNetwork, dict]) -> int:
    """The round node 0 is collecting updates for (its settled height + 1)."""
    return int(quiet[1]["height"]) + 1


def _submission(net: LiveNetwork, *, round: int, update: bytes | None = None) -> bytes:
    p = net.genesis.param_count
    sub = UpdateSubmission(
        round=round,
        client_id=1,
        update=update if update is not None else np.zeros(p, dtype="<f4").tobytes(),
        base_block_hash=net.genesis.block_hash,
    ).signed(net.key(1))
    return sub.encode()


def test_malformed_body_is_invalid_argument(quiet, stub) -> None:  # type: ignore[no-untyped-def]
    net, _ = quiet
    env = _seal(net, MessageKind.SUBMISSION, b"\x51\x01garbage")
    assert _code(lambda: stub.SubmitUpdate(env, timeout=10)) is grpc.StatusCode.INVALID_ARGUMENT


def test_unknown_sender_is_unauthenticated(quiet, stub) -> None:  # type: ignore[no-untyped-def]
    net, _ = quiet
    env = _seal(net, MessageKind.SUBMISSION, _submission(net, round=_current(quiet)), sender=1)
    env.sender = 99
    assert _code(lambda: stub.SubmitUpdate(env, timeout=10)) is grpc.StatusCode.UNAUTHENTICATED


def test_wrong_key_is_unauthenticated(quiet, stub) -> None:  # type: ignore[no-untyped-def]
    net, _ = quiet
    env = _seal(
        net, MessageKind.SUBMISSION, _submission(net, round=_current(quiet)), sender=1, key_of=2
    )
    assert _code(lambda: stub.SubmitUpdate(env, timeout=10)) is grpc.StatusCode.UNAUTHENTICATED


def test_signature_for_another_kind_or_network_is_unauthenticated(quiet, stub) -> None:  # type: ignore[no-untyped-def]
    net, _ = quiet
    body = _submission(net, round=_current(quiet))
    as_vote = _seal(net, MessageKind.VOTE, body)
    assert _code(lambda: stub.SubmitUpdate(as_vote, timeout=10)) is grpc.StatusCode.UNAUTHENTICATED
    other = _seal(net, MessageKind.SUBMISSION, body, network=b"\x01" * 32)
    assert _code(lambda: stub.SubmitUpdate(other, timeout=10)) is grpc.StatusCode.UNAUTHENTICATED


def test_message_replayed_to_another_node_is_refused(quiet, stub) -> None:  # type: ignore[no-untyped-def]
    net, _ = quiet
    for_node_2 = _seal(
        net, MessageKind.SUBMISSION, _submission(net, round=_current(quiet)), recipient=2
    )
    code = _code(lambda: stub.SubmitUpdate(for_node_2, timeout=10))
    assert code is grpc.StatusCode.PERMISSION_DENIED


def test_stale_round_is_failed_precondition(quiet, stub) -> None:  # type: ignore[no-untyped-def]
    net, _ = quiet
    env = _seal(net, MessageKind.SUBMISSION, _submission(net, round=_current(quiet) - 1))
    assert _code(lambda: stub.SubmitUpdate(env, timeout=10)) is grpc.StatusCode.FAILED_PRECONDITION


def test_nan_update_is_invalid_argument(quiet, stub) -> None:  # type: ignore[no-untyped-def]
    net, _ = quiet
    values = np.zeros(net.genesis.param_count, dtype="<f4")
    values[7] = np.nan
    body = _submission(net, round=_current(quiet), update=values.tobytes())
    env = _seal(net, MessageKind.SUBMISSION, body)
    # a stale base block (genesis) is found first for the current round: either way the node refuses it
    code = _code(lambda: stub.SubmitUpdate(env, timeout=10))
    assert code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION)
    head = bytes.fromhex(node_status(net.address(0))["head_hash"])
    sub = dataclasses.replace(
        UpdateSubmission.decode(body), base_block_hash=head, signature=None
    ).signed(net.key(1))
    env = _seal(net, MessageKind.SUBMISSION, sub.encode())
    assert _code(lambda: stub.SubmitUpdate(env, timeout=10)) is grpc.StatusCode.INVALID_ARGUMENT


def test_oversized_message_is_resource_exhausted(quiet, stub) -> None:  # type: ignore[no-untyped-def]
    env = common_pb2.Envelope(sender=1, recipient=0, body=b"\0" * (MAX_MESSAGE_BYTES + 1))
    code = _code(lambda: stub.SubmitUpdate(env, timeout=30))
    assert code is grpc.StatusCode.RESOURCE_EXHAUSTED


def test_replayed_block_is_a_harmless_duplicate(quiet, stub) -> None:  # type: ignore[no-untyped-def]
    net, _ = quiet
    store = SqliteLedgerStore(Path(net.plan.node(1).data_dir) / "ledger.sqlite")
    try:
        block1 = store.get(1)
    finally:
        store.close()
    env = _seal(net, MessageKind.BLOCK, block1.encode())
    assert stub.AnnounceBlock(env, timeout=10).outcome == "duplicate"
    sync = _seal(net, MessageKind.SYNC_REQUEST, SyncRequest(0).encode())
    assert _code(lambda: stub.FetchBlocks(sync, timeout=10)) is grpc.StatusCode.INVALID_ARGUMENT


def test_metrics_name_height_and_rejections(quiet) -> None:  # type: ignore[no-untyped-def]
    net, _ = quiet
    port = net.plan.node(0).metrics_port
    assert port is not None
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    assert "# TYPE qbfl_height gauge" in text
    assert 'qbfl_messages_rejected_total{reason="submission:UNAUTHENTICATED"}' in text
    assert "qbfl_stake " in text and "qbfl_view_changes_total " in text


def test_node_still_serves_and_nothing_changed(quiet, stub) -> None:  # type: ignore[no-untyped-def]
    net, before = quiet
    # run last (pytest keeps file order): every hostile call above has been answered
    after = node_status(net.address(0))
    assert after["height"] == before["height"] and after["head_hash"] == before["head_hash"]
    reply = node_pb2_grpc.LedgerStub(insecure_channel(net.address(0))).Status(
        node_pb2.StatusRequest(), timeout=5
    )
    assert reply.json
    rejected = {k: v for k, v in after["counters"].items() if k.startswith("rejected:submission")}
    assert sum(rejected.values()) >= 7, rejected
    store = SqliteLedgerStore(Path(net.plan.node(0).data_dir) / "ledger.sqlite")
    try:
        assert Chain(store).height == before["height"]
    finally:
        store.close()
