"""In-memory network for ConsensusNodes: hand-driven clock, seeded delays, drops and reordering."""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import blake3
import numpy as np

from qbfl.consensus.effects import Broadcast, CommitBlock, Effect, ForkObserved, Send, SetTimer
from qbfl.consensus.events import (
    Event,
    LocalUpdateReady,
    Message,
    TimerFired,
    TimerKind,
    VoteReceived,
    event_for,
)
from qbfl.consensus.wire import VoteMessage
from qbfl.crypto.signing import SigningKey
from qbfl.errors import ForkDetected, QbflError
from qbfl.ledger.block import ConsensusMessage
from qbfl.ledger.genesis import GenesisBlock, RosterEntry, TaskSpec, make_genesis

UpdateSource = Callable[[int, int], bytes | None]  # (node id, round) → local update, None: none


class NetworkMember(Protocol):
    """What the network drives: a ConsensusNode, or a shell around one (qbfl.node.runtime)."""

    @property
    def node_id(self) -> int: ...

    @property
    def round(self) -> int: ...

    @property
    def view(self) -> int: ...

    @property
    def voted(self) -> ConsensusMessage | None: ...

    def start(self) -> list[Effect]: ...

    def handle(self, event: Event) -> list[Effect]: ...


class Transport(Protocol):
    """What a node's shell needs from the network; GrpcTransport is the other implementation."""

    def send(self, to: int, message: Message) -> None: ...

    def broadcast(self, message: Message) -> None: ...

    def set_timer(
        self, kind: TimerKind, round: int, view: int, delay_s: float, seq: int = 0
    ) -> None: ...


@dataclass(frozen=True)
class NetworkConditions:
    """Seeded message scheduling: uniform delay in [min, max] (which also reorders), i.i.d. drops."""

    min_delay_s: float = 0.01
    max_delay_s: float = 0.05
    drop_rate: float = 0.0
    train_delay_s: float = 0.1  # local training time between a block and the next update

    def __post_init__(self) -> None:
        if not 0 <= self.min_delay_s <= self.max_delay_s:
            raise ValueError("need 0 <= min_delay_s <= max_delay_s")
        if not 0 <= self.drop_rate < 1:
            raise ValueError("drop_rate must be in [0, 1)")
        if self.train_delay_s < 0:
            raise ValueError("train_delay_s must be >= 0")


class InMemoryTransport:
    """One node's endpoint on an InMemoryNetwork."""

    def __init__(self, network: InMemoryNetwork, node_id: int) -> None:
        self._network = network
        self.node_id = node_id

    def send(self, to: int, message: Message) -> None:
        self._network.post(self.node_id, to, message)

    def broadcast(self, message: Message) -> None:
        for to in self._network.node_ids:
            if to != self.node_id:
                self._network.post(self.node_id, to, message)

    def set_timer(
        self, kind: TimerKind, round: int, view: int, delay_s: float, seq: int = 0
    ) -> None:
        self._network.schedule(self.node_id, TimerFired(kind, round, view, seq), delay_s)


class SafetyViolation(QbflError):
    """An honest node broke agreement: two blocks at one height, or two votes in one view."""


@dataclass
class SafetyMonitor:
    """Checks, after every step, the invariants the adversarial suites rely on.

    - no two different blocks committed at one height by honest nodes (no fork);
    - no honest member signs two different messages for one (round, view);
    - no honest node ever raises ForkDetected or reports ForkObserved.
    """

    honest: frozenset[int]
    committed: dict[int, bytes] = field(default_factory=dict)
    votes: dict[tuple[int, int, int], ConsensusMessage] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)

    def observe(self, node: NetworkMember, event: Event, effects: list[Effect]) -> None:
        if node.node_id not in self.honest:
            return
        for effect in effects:
            if isinstance(effect, CommitBlock):
                b = effect.block
                seen = self.committed.setdefault(b.height, b.block_hash)
                if seen != b.block_hash:
                    self.violations.append(f"fork at height {b.height} (node {node.node_id})")
            elif isinstance(effect, Send) and isinstance(effect.message, VoteMessage):
                self._vote(node.node_id, effect.message)
            elif isinstance(effect, ForkObserved):
                self.violations.append(
                    f"node {node.node_id}: two valid blocks at height {effect.held.height}"
                )
        if isinstance(event, VoteReceived) and event.sender == node.node_id:
            self._vote(node.node_id, event.vote)
        if node.voted is not None:
            self._vote_message(node.node_id, node.round, node.view, node.voted)

    def _vote(self, node_id: int, vm: VoteMessage) -> None:
        self._vote_message(node_id, vm.round, vm.view, vm.message)

    def _vote_message(self, node_id: int, round: int, view: int, msg: ConsensusMessage) -> None:
        seen = self.votes.setdefault((node_id, round, view), msg)
        if seen != msg:
            self.violations.append(
                f"node {node_id} signed two messages in round {round} view {view}"
            )

    def fork_raised(self, node_id: int, exc: ForkDetected) -> None:
        if node_id in self.honest:
            self.violations.append(f"node {node_id}: {exc}")

    def check(self) -> None:
        if self.violations:
            raise SafetyViolation("; ".join(self.violations[:5]))


class InMemoryNetwork:
    """Delivers messages and timers between ConsensusNodes in a deterministic, seeded order.

    Time only moves when `step` takes the next scheduled item (PySyncObj-style hand-driven clock);
    ties are broken by a seeded random priority, so equal-time messages arrive in shuffled order.
    """

    def __init__(
        self,
        *,
        seed: int,
        conditions: NetworkConditions | None = None,
        updates: UpdateSource | None = None,
        monitor: SafetyMonitor | None = None,
        through_bytes: bool = False,
    ) -> None:
        self.now = 0.0
        # through_bytes: every message crosses as its canonical encoding (as over gRPC)
        self._through_bytes = through_bytes
        self.conditions = conditions or NetworkConditions()
        self.monitor = monitor
        self._updates = updates
        self._rng = np.random.default_rng(seed)
        self._queue: list[tuple[float, float, int, int, Event]] = []
        self._seq = 0
        self._nodes: dict[int, NetworkMember] = {}
        self._offline: set[int] = set()
        self.steps = 0
        self.delivered = 0
        self.dropped = 0
        self.rejections: Counter[tuple[int, str]] = Counter()

    def clock(self) -> float:
        """The injected clock of every node on this network."""
        return self.now

    @property
    def node_ids(self) -> tuple[int, ...]:
        return tuple(self._nodes)

    @property
    def nodes(self) -> Mapping[int, NetworkMember]:
        return self._nodes

    def add(self, node: NetworkMember) -> None:
        self._nodes[node.node_id] = node

    def transport(self, node_id: int) -> InMemoryTransport:
        return InMemoryTransport(self, node_id)

    def start(self, node_ids: Collection[int] | None = None) -> None:
        for node_id in sorted(self._nodes if node_ids is None else node_ids):
            node = self._nodes[node_id]
            self._execute(node, node.start())
            self._schedule_update(node)

    def set_offline(self, node_id: int, offline: bool) -> None:
        """An offline node receives nothing and its timers are lost (a crash without disk loss)."""
        (self._offline.add if offline else self._offline.discard)(node_id)

    def post(self, sender: int, to: int, message: Message) -> None:
        c = self.conditions
        if c.drop_rate and self._rng.random() < c.drop_rate:
            self.dropped += 1
            return
        delay = float(self._rng.uniform(c.min_delay_s, c.max_delay_s))
        if self._through_bytes:
            message = type(message).decode(message.encode())
        self.schedule(to, event_for(sender, message), delay)

    def schedule(self, node_id: int, event: Event, delay_s: float) -> None:
        self._seq += 1
        item = (self.now + delay_s, float(self._rng.random()), self._seq, node_id, event)
        heapq.heappush(self._queue, item)

    def step(self) -> bool:
        """Deliver the next item; False when nothing is scheduled."""
        if not self._queue:
            return False
        at, _, _, node_id, event = heapq.heappop(self._queue)
        self.now = max(self.now, at)
        self.steps += 1
        if node_id in self._offline:
            return True
        node = self._nodes[node_id]
        self.delivered += 1
        effects: list[Effect] = []
        try:
            effects = node.handle(event)
        except ForkDetected as exc:
            self.rejections[(node_id, "ForkDetected")] += 1
            if self.monitor is not None:
                self.monitor.fork_raised(node_id, exc)
        except QbflError as exc:
            self.rejections[(node_id, type(exc).__name__)] += 1
        self._execute(node, effects)
        if self.monitor is not None:
            self.monitor.observe(node, event, effects)
        return True

    def run(self, until: Callable[[], bool], *, max_steps: int) -> bool:
        """Step until `until()` holds (True) or max_steps or an empty queue (False)."""
        for _ in range(max_steps):
            if until():
                return True
            if not self.step():
                return until()
            if self.monitor is not None:
                self.monitor.check()
        return until()

    def _execute(self, node: NetworkMember, effects: list[Effect]) -> None:
        transport = self.transport(node.node_id)
        committed = False
        for effect in effects:
            if isinstance(effect, Send):
                transport.send(effect.to, effect.message)
            elif isinstance(effect, Broadcast):
                transport.broadcast(effect.message)
            elif isinstance(effect, SetTimer):
                transport.set_timer(
                    effect.kind, effect.round, effect.view, effect.delay_s, effect.seq
                )
            elif isinstance(effect, CommitBlock):
                committed = True
        if committed:  # once, for the round the node is in now (a sync may apply several blocks)
            self._schedule_update(node)

    def _schedule_update(self, node: NetworkMember) -> None:
        if self._updates is None:
            return
        update = self._updates(node.node_id, node.round)
        if update is not None:
            event = LocalUpdateReady(node.round, update)
            self.schedule(node.node_id, event, self.conditions.train_delay_s)


def synthetic_genesis(
    n_nodes: int, param_count: int, *, seed: int, **task_options: object
) -> tuple[GenesisBlock, dict[int, SigningKey]]:
    """A signed genesis with `n_nodes` seeded ML-DSA identities and zero initial parameters.

    For tests and simulations that feed synthetic updates; keys derive from (seed, node id).
    """
    keys = {
        i: SigningKey.from_seed(blake3.blake3(f"qbfl-test-key/{seed}/{i}".encode()).digest())
        for i in range(n_nodes)
    }
    publisher = SigningKey.from_seed(blake3.blake3(f"qbfl-test-publisher/{seed}".encode()).digest())
    options: dict[str, Any] = {
        "task": "mnist",
        "model": "synthetic",
        "rounds": 1,
        "seed": seed,
        "lr": 0.05,
        **task_options,
    }
    task = TaskSpec(n_nodes=n_nodes, **options)
    roster = [RosterEntry(i, keys[i].public_key, f"inmemory:{i}") for i in range(n_nodes)]
    params = np.zeros(param_count, dtype="<f4").tobytes()
    return make_genesis(task, params, roster, publisher), keys
