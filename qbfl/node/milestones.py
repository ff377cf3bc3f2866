"""When each step of a round happened at one node (monotonic clock), for status and benchmarks.

All node processes of one machine share CLOCK_MONOTONIC, so `qbfl-bench network` can line up the
milestones of every node and split a round into training, submission, aggregation, QBA, voting
and block propagation (docs/network.md, "Where a round's time goes").
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable

from qbfl.consensus.effects import Broadcast, CommitBlock, Effect, Send
from qbfl.consensus.events import Event, LocalUpdateReady, ProposalReceived
from qbfl.consensus.wire import Proposal, VoteMessage
from qbfl.ledger.block import Block

KEEP_ROUNDS = 16


class Milestones:
    """round → {milestone: time}; the first time a milestone is reached counts.

    gRPC handler threads, the trainer and the event loop mark, and the status answer reads: one
    lock keeps `recent` from iterating while a mark inserts or evicts a round.
    """

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self.rounds: OrderedDict[int, dict[str, float]] = OrderedDict()

    def mark(self, round: int, name: str, at: float | None = None) -> None:
        when = self._clock() if at is None else at
        with self._lock:
            entry = self.rounds.get(round)
            if entry is None:
                entry = self.rounds[round] = {}
                while len(self.rounds) > KEEP_ROUNDS:
                    self.rounds.popitem(last=False)
            entry.setdefault(name, when)

    def observe(
        self, round: int, event: Event, effects: list[Effect], started: float, ended: float
    ) -> None:
        """Milestones that one handled event reached (`round`: the round it was handled in)."""
        if isinstance(event, LocalUpdateReady):
            self.mark(event.round, "submitted", ended)
        elif isinstance(event, ProposalReceived):
            self.mark(event.proposal.round, "proposal_received", ended)
        for effect in effects:
            message = effect.message if isinstance(effect, Send | Broadcast) else None
            if isinstance(message, Proposal):
                self.mark(message.round, "proposed", ended)
                self.mark(message.round, "aggregate_s", ended - started)
            elif isinstance(message, VoteMessage):
                self.mark(message.round, "decided", ended)
            elif isinstance(message, Block) and isinstance(effect, Broadcast):
                self.mark(message.round, "block_out", ended)
            elif isinstance(effect, CommitBlock):
                self.mark(effect.block.round, "committed", ended)
                self.mark(effect.block.round + 1, "entered", ended)

    def recent(self) -> dict[str, dict[str, float]]:
        with self._lock:
            return {str(r): dict(m) for r, m in self.rounds.items()}
