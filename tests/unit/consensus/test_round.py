"""One node's Alg. 3 round driven by hand: effects checked step by step, view change, catch-up."""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Sequence

import numpy as np
import pytest

from qbfl.consensus.attacks import CONSENSUS_ATTACKS, ConsensusAttacker, get_consensus_attacker
from qbfl.consensus.effects import (
    Broadcast,
    CommitBlock,
    Effect,
    RoundCompleted,
    Send,
    SetTimer,
    ViewChanged,
)
from qbfl.consensus.events import (
    Event,
    LocalUpdateReady,
    Phase,
    TimerFired,
    TimerKind,
    event_for,
)
from qbfl.consensus.inmemory import (
    InMemoryNetwork,
    SafetyMonitor,
    SafetyViolation,
    synthetic_genesis,
)
from qbfl.consensus.round import ConsensusNode, RoundTimeouts
from qbfl.consensus.stakes import derive_stakes
from qbfl.consensus.wire import Proposal, QbaEnvelope, VoteMessage
from qbfl.errors import StaleRound
from qbfl.ledger.block import Block, UpdateSubmission

N, P = 7, 8


class EchoQba:
    """A trivially correct broadcast for an honest committee: members output the leader's value.

    The round logic is tested here in isolation; the real QBA is used by the adversarial suites.
    """

    rounds = 1

    def __init__(
        self, *, node_id: int, committee: Sequence[int], round: int, view: int, adversary: object
    ) -> None:
        self.me, self.committee, self.value = node_id, tuple(committee), None

    def start(self, value: bytes) -> list[tuple[int, object]]:
        self.value = value
        return [(m, value) for m in self.committee if m != self.me]

    def on_message(self, sender: int, payload: object) -> list[tuple[int, object]]:
        if sender == self.committee[0] and isinstance(payload, bytes):
            self.value = payload
        return []

    def end_round(self, k: int) -> list[tuple[int, object]]:
        return []

    def output(self) -> bytes | None:
        return self.value


def update(node: int, round: int) -> bytes:
    rng = np.random.default_rng([11, round, node])
    return (np.ones(P) + rng.normal(0, 0.01, P)).astype("<f4").tobytes()


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def make_nodes(**task: object) -> tuple[dict[int, ConsensusNode], Clock]:
    genesis, keys = synthetic_genesis(N, P, seed=1, committee_size=3, f=2, **task)
    clock = Clock()
    nodes = {
        i: ConsensusNode(i, keys[i], genesis, qba=EchoQba, clock=clock, timeouts=RoundTimeouts())
        for i in range(N)
    }
    return nodes, clock


class Router:
    """Delivers Send/Broadcast effects in FIFO order; records every effect per node."""

    def __init__(self, nodes: dict[int, ConsensusNode]) -> None:
        self.nodes = nodes
        self.queue: deque[tuple[int, Event]] = deque()
        self.log: list[tuple[int, Effect]] = []
        self.stale = 0

    def feed(self, node: int, effects: list[Effect]) -> None:
        for e in effects:
            self.log.append((node, e))
            if isinstance(e, Send):
                self.queue.append((e.to, event_for(node, e.message)))
            elif isinstance(e, Broadcast):
                for to in self.nodes:
                    if to != node:
                        self.queue.append((to, event_for(node, e.message)))

    def drain(self) -> None:
        while self.queue:
            to, event = self.queue.popleft()
            try:
                self.feed(to, self.nodes[to].handle(event))
            except StaleRound:
                self.stale += 1  # e.g. the third vote reaching a leader that already committed

    def fire(self, kind: TimerKind, nodes: Sequence[int] | None = None) -> None:
        for i in nodes if nodes is not None else list(self.nodes):
            n = self.nodes[i]
            self.feed(i, n.handle(TimerFired(kind, n.round, n.view)))
        self.drain()

    def effects(self, kind: type) -> list[tuple[int, Effect]]:
        return [(n, e) for n, e in self.log if isinstance(e, kind)]


def test_single_round_effects_step_by_step() -> None:
    nodes, _ = make_nodes()
    router = Router(nodes)
    committee = nodes[0].committee
    members = committee.members
    assert len(members) == 3 and all(n.committee == committee for n in nodes.values())

    # start: every node arms the deadline; members also the collection timer
    for i, n in nodes.items():
        timers = n.start()
        kinds = {t.kind for t in timers if isinstance(t, SetTimer)}
        assert kinds == (
            {TimerKind.DEADLINE, TimerKind.COLLECT} if i in members else {TimerKind.DEADLINE}
        )
        assert n.phase is (Phase.COLLECTING_UPDATES if i in members else Phase.WAITING_FOR_BLOCK)

    # a local update becomes a signed submission sent to each other committee member
    effects = nodes[6].handle(LocalUpdateReady(1, update(6, 1)))
    sends = [e for e in effects if isinstance(e, Send)]
    assert {s.to for s in sends} == set(members) - {6}
    assert all(isinstance(s.message, UpdateSubmission) and s.message.signature for s in sends)
    router.feed(6, effects)
    router.drain()
    for i in range(6):
        router.feed(i, nodes[i].handle(LocalUpdateReady(1, update(i, 1))))
        router.drain()

    # all N arrived → the leader proposed at once: a Proposal and QBA messages to the members
    proposals = router.effects(Send)
    assert any(isinstance(e.message, Proposal) for _, e in proposals)
    assert any(isinstance(e.message, QbaEnvelope) for _, e in proposals)
    assert nodes[committee.leader].phase is Phase.QBA

    router.fire(TimerKind.COLLECT, members)
    router.fire(TimerKind.QBA_ROUND, members)

    votes = [e for _, e in router.effects(Send) if isinstance(e.message, VoteMessage)]
    assert len(votes) == 2  # the two non-leader members; the leader's own vote stays local
    blocks = [e.message for _, e in router.effects(Broadcast) if isinstance(e.message, Block)]
    assert blocks and blocks[0].height == 1 and blocks[0].leader == committee.leader
    commits = router.effects(CommitBlock)
    assert sorted(n for n, _ in commits) == list(range(N))
    assert len({n.chain.head_hash for n in nodes.values()}) == 1
    done = [e for _, e in router.effects(RoundCompleted)]
    assert all(d.round == 1 and d.view == 0 and d.view_changes == 0 for d in done)
    stakes = nodes[3].chain.stakes
    assert all(stakes[c] == 2 for c in blocks[0].selected)
    assert len(blocks[0].selected) == N - 2 - 2  # Alg. 2 keeps N − f − 2
    assert all(n.round == 2 and n.view == 0 for n in nodes.values())


def test_deadline_changes_view_and_penalises_the_failed_committee() -> None:
    nodes, _ = make_nodes()
    router = Router(nodes)
    for i, n in nodes.items():
        router.feed(i, n.start())
    failed = nodes[0].committee
    router.fire(TimerKind.DEADLINE)  # no updates at all → no block in view 0
    changes = router.effects(ViewChanged)
    assert len(changes) == N and all(e.to_view == 1 for _, e in changes)
    assert all(n.view == 1 for n in nodes.values())
    new = nodes[0].committee
    assert new.view == 1 and all(n.committee == new for n in nodes.values())

    for i in range(N):
        router.feed(i, nodes[i].handle(LocalUpdateReady(1, update(i, 1))))
        router.drain()
    router.fire(TimerKind.COLLECT, new.members)
    router.fire(TimerKind.QBA_ROUND, new.members)
    assert all(n.chain.height == 1 for n in nodes.values())
    block = nodes[0].chain.block_at(1)
    assert block.view == 1 and block.committee == new.members
    stakes = nodes[0].chain.stakes
    for c in failed.members:
        assert stakes[c] == 1 - 1 + (1 if c in block.selected else 0)
    assert stakes == derive_stakes(nodes[0].chain.genesis, [block])


def test_stale_timers_are_ignored_and_late_messages_buffered() -> None:
    nodes, _ = make_nodes()
    n = nodes[0]
    n.start()
    assert n.handle(TimerFired(TimerKind.DEADLINE, 1, 5)) == []  # a future view's timer
    assert n.view == 0
    effects = n.handle(TimerFired(TimerKind.DEADLINE, 1, 0))
    assert any(isinstance(e, ViewChanged) for e in effects) and n.view == 1
    assert n.handle(TimerFired(TimerKind.DEADLINE, 1, 0)) == []  # that view is over


def _run_rounds(net: InMemoryNetwork, ids: Sequence[int], height: int) -> None:
    assert net.run(lambda: all(net.nodes[i].chain.height >= height for i in ids), max_steps=200_000)


def test_catch_up_after_missing_blocks() -> None:
    genesis, keys = synthetic_genesis(N, P, seed=2, committee_size=3, f=2)
    monitor = SafetyMonitor(frozenset(range(N)))
    net = InMemoryNetwork(seed=5, updates=update, monitor=monitor)
    for i in range(N):
        net.add(ConsensusNode(i, keys[i], genesis, qba=EchoQba, clock=net.clock))
    late = 6
    net.set_offline(late, True)
    net.start([i for i in range(N) if i != late])
    _run_rounds(net, range(6), 3)
    assert net.nodes[late].chain.height == 0
    source = net.nodes[0]
    blocks = tuple(source.chain.block_at(h) for h in range(1, source.chain.height + 1))
    effects = net.nodes[late].catch_up(blocks)
    assert [e.block.height for e in effects if isinstance(e, CommitBlock)] == list(
        range(1, len(blocks) + 1)
    )
    assert net.nodes[late].chain.head_hash == source.chain.head_hash
    assert net.nodes[late].chain.stakes == derive_stakes(genesis, blocks)
    assert net.nodes[late].catch_up(blocks) == []  # already held: duplicates, nothing changes


def test_offline_node_resyncs_through_the_network() -> None:
    genesis, keys = synthetic_genesis(N, P, seed=3, committee_size=3, f=2)
    net = InMemoryNetwork(seed=6, updates=update, monitor=SafetyMonitor(frozenset(range(N))))
    for i in range(N):
        net.add(ConsensusNode(i, keys[i], genesis, qba=EchoQba, clock=net.clock))
    net.start()
    net.set_offline(5, True)
    _run_rounds(net, [0, 1, 2, 3, 4, 6], 2)
    net.set_offline(5, False)
    _run_rounds(net, range(N), 4)  # node 5 sees later-round traffic, asks for blocks, catches up
    assert len({net.nodes[i].chain.blocks[3].block_hash for i in range(N)}) == 1


def test_monitor_reports_a_fork() -> None:
    nodes, _ = make_nodes()
    router = Router(nodes)
    for i in range(N):
        router.feed(i, nodes[i].handle(LocalUpdateReady(1, update(i, 1))))
        router.drain()
    router.fire(TimerKind.COLLECT, nodes[0].committee.members)
    router.fire(TimerKind.QBA_ROUND, nodes[0].committee.members)
    block = nodes[0].chain.block_at(1)
    other = dataclasses.replace(block, update=block.update[::-1])
    monitor = SafetyMonitor(frozenset({1, 2}))
    monitor.observe(nodes[1], LocalUpdateReady(1, b""), [CommitBlock(block)])
    monitor.check()
    monitor.observe(nodes[2], LocalUpdateReady(1, b""), [CommitBlock(other)])
    with pytest.raises(SafetyViolation, match="fork at height 1"):
        monitor.check()


def test_attacker_policy_is_seeded_and_validated() -> None:
    a = ConsensusAttacker(sorted(CONSENSUS_ATTACKS), seed=4)
    b = ConsensusAttacker(sorted(CONSENSUS_ATTACKS), seed=4)
    draws = [a.conduct(3, r, 0).name for r in range(1, 40)]
    assert draws == [b.conduct(3, r, 0).name for r in range(1, 40)]
    assert set(draws) == set(CONSENSUS_ATTACKS)  # every attack drawn at some round
    assert get_consensus_attacker("random", seed=1).attacks == tuple(sorted(CONSENSUS_ATTACKS))
    with pytest.raises(ValueError, match="unknown consensus attack"):
        ConsensusAttacker(["nope"], seed=1)
    with pytest.raises(ValueError):
        RoundTimeouts(collect_s=0)
