"""One node, whatever carries its messages: ConsensusNode + SQLite ledger + learner (DESIGN §8).

`NodeRuntime` is the same object under the gRPC shell (qbfl.node.process, one node per process)
and under the in-memory network (qbfl.orchestrator.fullsim, all nodes in one process). The shell
feeds it events and routes the transport effects it returns (Send, Broadcast, SetTimer); the
runtime itself executes the local ones: a committed block is appended to the ledger and applied
to the model, round metrics are kept, fork evidence is logged. Training is asked for by the shell
after a commit (`train`), on a worker thread under gRPC and synchronously in the simulation.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from qbfl.consensus.effects import (
    CommitBlock,
    Effect,
    ForkObserved,
    RoundCompleted,
    ViewChanged,
)
from qbfl.consensus.events import Event, LocalUpdateReady, Phase
from qbfl.consensus.round import ConsensusNode
from qbfl.errors import InvalidUpdate, QbflError
from qbfl.ledger.block import Block, ConsensusMessage
from qbfl.ledger.store import LedgerStore
from qbfl.node.learner import Learner
from qbfl.node.ledgerwriter import LedgerWriter

log = logging.getLogger("qbfl.node")


@dataclass
class RuntimeStats:
    """What a node reports about itself (status, metrics, summaries)."""

    rounds: deque[RoundCompleted] = field(default_factory=lambda: deque(maxlen=256))
    view_changes: int = 0
    forks: int = 0
    trained: int = 0
    submitted: int = 0
    diverged: int = 0
    last_training_s: float = 0.0


class NodeRuntime:
    """ConsensusNode plus what a node owns besides the protocol: its ledger and its model.

    The store must hold exactly the chain the ConsensusNode was built on; `restore` replays a
    store that already holds blocks (a restart) into the node and the learner, verifying each.
    """

    def __init__(
        self,
        node: ConsensusNode,
        store: LedgerStore,
        learner: Learner | None,
        *,
        clock: Callable[[], float],
        on_effect: Callable[[Effect], None] | None = None,
        writer: LedgerWriter | None = None,
    ) -> None:
        if store.genesis.block_hash != node.chain.genesis.block_hash:
            raise ValueError(
                "the ledger store and the consensus node hold different genesis blocks"
            )
        self.node = node
        self.store = store
        self.learner = learner
        self.stats = RuntimeStats()
        self._clock = clock
        self._on_effect = on_effect
        self.writer = writer  # None: every block written before the event returns (simulation)

    # --- the surface the in-memory network and its SafetyMonitor use -----------------------------

    @property
    def node_id(self) -> int:
        return self.node.node_id

    @property
    def round(self) -> int:
        return self.node.round

    @property
    def view(self) -> int:
        return self.node.view

    @property
    def phase(self) -> Phase:
        return self.node.phase

    @property
    def voted(self) -> ConsensusMessage | None:
        return self.node.voted

    @property
    def height(self) -> int:
        return self.node.chain.height

    # --- life cycle -------------------------------------------------------------------------------

    def restore(self) -> list[Effect]:
        """Replay the blocks already in the store (a restart): verified again, applied to the model.

        Raises the node's verification error if a stored block does not verify on this genesis.
        """
        stored = self.store.height
        if stored == 0:
            return []
        blocks = tuple(self.store.range(1, stored + 1))
        effects: list[Effect] = []
        for lo in range(0, len(blocks), 64):
            effects += self.node.catch_up(blocks[lo : lo + 64])
        if self.node.chain.height != stored:
            raise QbflError(
                f"ledger holds {stored} blocks but only {self.node.chain.height} verified on replay"
            )
        self._local(effects)
        return effects

    def start(self) -> list[Effect]:
        return self.node.start()

    def handle(self, event: Event) -> list[Effect]:
        """Feed one event; executes the local effects, returns all (the shell routes the rest)."""
        if isinstance(event, LocalUpdateReady):
            self.stats.submitted += 1
        effects = self.node.handle(event)
        self._local(effects)
        return effects

    def train(self, round: int) -> bytes | None:
        """Train for `round` if it is still the round in progress; None if not (or if diverged)."""
        if self.learner is None or round != self.node.round:
            return None
        if round > self.learner.task.rounds:
            return None  # the task is over: no block will take it (and a DP budget is spent)
        started = self._clock()
        try:
            update = self.learner.train(round)
        except InvalidUpdate as exc:
            self.stats.diverged += 1
            log.warning("node %d: round %d training diverged: %s", self.node_id, round, exc)
            return None
        self.stats.trained += 1
        self.stats.last_training_s = self._clock() - started
        return update

    # --- local effects ----------------------------------------------------------------------------

    def _local(self, effects: list[Effect]) -> None:
        for effect in effects:
            if isinstance(effect, CommitBlock):
                self._persist(effect.block)
            elif isinstance(effect, RoundCompleted):
                self.stats.rounds.append(effect)
            elif isinstance(effect, ViewChanged):
                self.stats.view_changes += 1
                log.info(
                    "node %d: round %d view %d → %d (no valid block before the deadline)",
                    self.node_id,
                    effect.round,
                    effect.from_view,
                    effect.to_view,
                )
            elif isinstance(effect, ForkObserved):
                self.stats.forks += 1
                log.error(
                    "node %d: FORK at height %d: held %s, rival %s (view %d)",
                    self.node_id,
                    effect.held.height,
                    effect.held.block_hash.hex(),
                    effect.rival.block_hash.hex(),
                    effect.rival.view,
                )
            if self._on_effect is not None:
                self._on_effect(effect)

    def _persist(self, block: Block) -> None:
        if self.writer is not None:
            self.writer.append(block)
        elif block.height > self.store.height:
            self.store.append(block)
        if self.learner is not None:
            self.learner.apply(block.update)


def status_document(
    runtime: NodeRuntime,
    *,
    role: str,
    done: bool,
    catching_up: bool,
    qkd: dict[str, Any],
    counters: dict[str, int],
    loop_depth: int,
    milestones: dict[str, Any],
) -> dict[str, Any]:
    """What `Ledger.Status` answers and the metrics are drawn from (docs/network.md §7)."""
    node = runtime.node
    chain = node.chain
    committee = node.committee
    stats = runtime.stats
    phases = (
        {"round": round(stats.rounds[-1].elapsed_s, 4), "training": round(stats.last_training_s, 4)}
        if stats.rounds
        else {}
    )
    return {
        "node": node.node_id,
        "state": "done" if done else "running",
        "role": role,
        "height": chain.height,
        "head_hash": chain.head_hash.hex(),
        "genesis_hash": chain.genesis.block_hash.hex(),
        "round": node.round,
        "view": node.view,
        "phase": node.phase.value,
        "committee": list(committee.members),
        "leader": committee.leader,
        "stake": chain.stakes[node.node_id],
        "rounds": node.task.rounds,
        "catching_up": catching_up,
        "view_changes": stats.view_changes,
        "trained": stats.trained,
        "last_training_s": round(stats.last_training_s, 4),
        "qkd": qkd,
        "counters": dict(node.counters) | counters,
        "loop_depth": loop_depth,
        "phases": phases,
        "milestones": milestones,
        "pid": os.getpid(),
    }
