"""Faults during a 7-node run (CometBFT e2e style): the round's leader is SIGKILLed mid-round, a
node is paused and resumed, another is killed and restarted from its data directory. Every node
ends on the same head — the restarted ones included — and no block is lost."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from qbfl.ledger.chain import Chain
from qbfl.ledger.store import SqliteLedgerStore
from qbfl.net.probe import node_blocks, node_status
from tests.e2e.livenet import live_network, wait_until

pytestmark = pytest.mark.e2e

NODES, ROUNDS = 7, 7


def _status(net, i: int) -> dict | None:  # type: ignore[no-untyped-def]
    """Node i's status, or None while it is down."""
    try:
        return node_status(net.address(i), timeout=2.0)
    except Exception:
        return None


def _heights(net) -> dict[int, int]:  # type: ignore[no-untyped-def]
    """Every node's height; -1 while it is down."""
    return {
        i: -1 if (status := _status(net, i)) is None else int(status.get("height", -1))
        for i in range(NODES)
    }


def _view_changed(net, leader: int, height: int, view: int) -> bool:  # type: ignore[no-untyped-def]
    """Some live node left `view` of round height + 1, or already holds its block."""
    for i in range(NODES):
        status = _status(net, i) if i != leader else None
        if status and (
            int(status["height"]) > height
            or (int(status["height"]) == height and int(status["view"]) > view)
        ):
            return True
    return False


def _kill_a_leader_mid_round(net) -> int:  # type: ignore[no-untyped-def]
    """SIGKILL the leader of the view in progress, start it again from its data directory once
    the round has left that view, and return it when the round's block is committed at a later
    view.

    The node comes back at once rather than after the round: with committees of 5 of 7 a dead
    node sits in ~5/7 of the later views' committees too, so a round without it can take many
    views (once 6 failed views, 100 s). If its block was already out when the signal landed
    (the kill came too late), the next round's leader is killed instead.
    """
    for _ in range(3):
        asked = next(i for i in range(NODES) if _status(net, i) is not None)
        status = node_status(net.address(asked))
        leader, height, view = int(status["leader"]), int(status["height"]), int(status["view"])
        net.backend.signal_node(leader, signal.SIGKILL)
        wait_until(
            lambda k=leader, h=height, v=view: _view_changed(net, k, h, v),
            120,
            "the round leaving the killed leader's view",
        )
        net.backend.start_node(leader)
        witness = next(i for i in range(NODES) if i != leader)
        wait_until(
            lambda w=witness, h=height: _heights(net)[w] >= h + 1,
            240,
            "the block of the killed leader's round",
        )
        block = node_blocks(net.address(witness), height + 1)[0][0]
        assert block.height == height + 1
        if block.view > view:
            return leader
        assert block.leader == leader  # its block was out before the kill: next round
    pytest.fail("the leader's block was out before the kill in 3 rounds running")


def test_leader_killed_node_paused_node_restarted(tmp_path: Path) -> None:
    with live_network(
        tmp_path, nodes=NODES, rounds=ROUNDS, round_timeout_s=8.0, linger_s=120.0
    ) as net:
        wait_until(lambda: min(_heights(net).values()) >= 1, 180, "block 1 everywhere")
        # 1. the leader of the round in progress dies mid-round: the view changes, rounds go on,
        # and it comes back from its data directory
        leader = _kill_a_leader_mid_round(net)
        # 2. another node is paused for 6 s, then resumed
        paused = next(i for i in range(NODES) if i != leader)
        net.backend.signal_node(paused, signal.SIGSTOP)
        time.sleep(6.0)
        net.backend.signal_node(paused, signal.SIGCONT)
        # 3. a third is killed and restarted with its data directory
        third = next(i for i in range(NODES) if i not in (leader, paused))
        message = net.backend.perturb(third, "kill", 1.0, forkserver=True)
        assert "started again" in message
        wait_until(
            lambda: min(_heights(net).values()) >= ROUNDS, 300, f"height {ROUNDS} everywhere"
        )
        heads = {i: node_status(net.address(i))["head_hash"] for i in range(NODES)}
        assert len(set(heads.values())) == 1, heads
    # nothing lost: every ledger on disk holds the whole chain and verifies
    hashes = set()
    for i in range(NODES):
        store = SqliteLedgerStore(tmp_path / f"node-{i}" / "ledger.sqlite")
        try:
            chain = Chain(store)
            assert chain.height == ROUNDS, f"node {i} at {chain.height}"
            hashes.add(store.head().block_hash)
        finally:
            store.close()
    assert len(hashes) == 1
