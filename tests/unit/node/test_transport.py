"""GrpcTransport's per-peer in-flight accounting (every message that ends gives its slot back), and
the event loop's report of failures nobody waits for."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator

import pytest

from qbfl.crypto.signing import SigningKey
from qbfl.ledger.block import UpdateSubmission
from qbfl.node import transport as transport_module
from qbfl.node.loop import EventLoop, Ticker
from qbfl.node.transport import GrpcTransport

REFUSED = "127.0.0.1:1"  # nothing listens on port 1: every call ends UNAVAILABLE at once


def _wait(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.01)


@pytest.fixture
def transport() -> Iterator[GrpcTransport]:
    ticker = Ticker(lambda event: None, time.monotonic)
    ticker.start()
    sender = GrpcTransport(
        me=0,
        key=SigningKey.generate(lambda n: bytes(n)),
        network=b"n" * 32,
        addresses={0: "127.0.0.1:0", 1: REFUSED},
        public_keys={},
        ticker=ticker,
        deliver_sync=lambda event: None,
    )
    yield sender
    sender.close()
    ticker.stop()


def _submission() -> UpdateSubmission:
    return UpdateSubmission(round=1, client_id=0, update=bytes(8), base_block_hash=bytes(32))


def test_a_retry_dropped_while_disconnected_gives_the_peer_slot_back(
    transport: GrpcTransport, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The first retry waits 1 s: time to disconnect the node before it fires.
    monkeypatch.setattr(transport_module, "BACKOFF_S", (1.0, 1.0, 1.0))
    transport.send(1, _submission())
    assert transport.in_flight(1) == 1
    _wait(lambda: any(k.startswith("retry:") for k in transport.counters))
    transport.disconnected_until = time.monotonic() + 60.0
    _wait(lambda: transport.counters["dropped:disconnected"] >= 1)
    # Before the fix the slot stayed taken for good: 512 such messages silenced the peer.
    assert transport.in_flight(1) == 0


def test_a_message_that_fails_for_good_gives_the_peer_slot_back(
    transport: GrpcTransport, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(transport_module, "BACKOFF_S", (0.01, 0.01))
    transport.send(1, _submission())
    _wait(lambda: any(k.startswith("failed:") for k in transport.counters))
    assert transport.in_flight(1) == 0


def test_a_failure_in_fire_and_forget_loop_work_is_logged_as_an_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    loop = EventLoop()
    loop.start()

    def broken() -> None:
        raise AssertionError("a bug in an event handler")

    with caplog.at_level(logging.INFO, logger="qbfl.node"):
        loop.post(broken, wait=False)
        loop.call(lambda: None)  # the loop has run `broken` once this returns
    loop.stop()
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert errors and "a bug in an event handler" in caplog.text
