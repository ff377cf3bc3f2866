"""What one node knows about the (round, view) in progress, and the timers that bound each view."""

from __future__ import annotations

import math
from dataclasses import dataclass

from qbfl.consensus.agreement import QbaSession, QbaSessionFactory
from qbfl.consensus.attacks import Conduct, ConductPolicy
from qbfl.consensus.chainview import ChainView
from qbfl.consensus.committee import Committee
from qbfl.consensus.effects import RoundCompleted
from qbfl.consensus.events import Phase
from qbfl.consensus.votes import VoteTally
from qbfl.consensus.wire import Proposal
from qbfl.ledger.block import Block, ConsensusMessage


@dataclass(frozen=True)
class RoundTimeouts:
    """Timers of one view, measured from the moment a node enters it (docs/consensus.md).

    collect_s: members accept submissions until then; the leader then aggregates.
    qba_round_s: length of one QBA multicast round (lock-step, synchronous model).
    deadline_s: no valid block by then → view change; None takes TaskSpec.round_timeout_s.
    *_delta_s: added once per failed view (CometBFT's timeout deltas): a view that failed because
    messages took longer than its timers gives the next view longer ones, so a network slower
    than the base timers still commits after a few view changes instead of failing forever.
    """

    collect_s: float = 2.0
    qba_round_s: float = 1.0
    deadline_s: float | None = None
    collect_delta_s: float = 0.0
    qba_round_delta_s: float = 0.0
    deadline_delta_s: float = 0.0

    def __post_init__(self) -> None:
        if not self.collect_s > 0 or not self.qba_round_s > 0:
            raise ValueError("collect_s and qba_round_s must be positive")
        if self.deadline_s is not None and not self.deadline_s > 0:
            raise ValueError("deadline_s must be positive")
        deltas = (self.collect_delta_s, self.qba_round_delta_s, self.deadline_delta_s)
        if not all(d >= 0 and math.isfinite(d) for d in deltas):
            raise ValueError("timeout deltas must be finite and >= 0")

    def collect(self, view: int) -> float:
        return self.collect_s + view * self.collect_delta_s

    def qba_round(self, view: int) -> float:
        return self.qba_round_s + view * self.qba_round_delta_s

    def deadline(self, view: int, base_s: float) -> float:
        """The view's deadline; `base_s` stands in for deadline_s when that is None."""
        return (self.deadline_s or base_s) + view * self.deadline_delta_s

    @classmethod
    def scaled(cls, round_timeout_s: float) -> RoundTimeouts:
        """Timers for a real network from the task's round timeout (the node process uses these).

        The collect timer is a quarter of the deadline and each QBA round a tenth; progress is
        event-driven (the leader proposes once every submission is in, a QBA round closes once
        every expected message arrived), so these are upper bounds; each failed view adds half
        of the base values.
        """
        collect, qba = round_timeout_s / 4, round_timeout_s / 10
        return cls(
            collect_s=collect,
            qba_round_s=qba,
            deadline_s=round_timeout_s,
            collect_delta_s=collect / 2,
            qba_round_delta_s=qba / 2,
            deadline_delta_s=round_timeout_s / 2,
        )


@dataclass
class ViewState:
    """One node's state of one (round, view); ConsensusNode replaces it on every view change."""

    round: int
    view: int
    committee: Committee
    conduct: Conduct
    phase: Phase
    votes: VoteTally  # filled only on the leader
    qba: QbaSession | None = None  # members only
    qba_rounds_done: int = 0
    proposal: Proposal | None = None
    voted: ConsensusMessage | None = None
    block_built: bool = False

    @classmethod
    def open(
        cls,
        *,
        node_id: int,
        chain: ChainView,
        view: int,
        policy: ConductPolicy,
        qba: QbaSessionFactory,
    ) -> ViewState:
        """Enter `view` of the next round: committee drawn locally (failed views penalised first),
        this node's conduct for the view, and a QBA session if it is on the committee."""
        round = chain.height + 1
        committee = chain.committee(view)
        conduct = policy.conduct(node_id, round, view)
        member = node_id in committee.members
        return cls(
            round=round,
            view=view,
            committee=committee,
            conduct=conduct,
            phase=Phase.COLLECTING_UPDATES if member else Phase.WAITING_FOR_BLOCK,
            votes=VoteTally(committee, chain.genesis.public_keys),
            qba=qba(
                node_id=node_id,
                committee=committee.members,
                round=round,
                view=view,
                adversary=conduct.qba_adversary(),
            )
            if member
            else None,
        )


class RoundMetrics:
    """When this node entered the round in progress and how many views failed since (injected clock)."""

    def __init__(self, now: float) -> None:
        self.started_at = now
        self.views_failed = 0

    def completed(self, block: Block, now: float) -> RoundCompleted:
        """The metrics of the round `block` closes; the next round starts now."""
        done = RoundCompleted(
            round=block.round,
            view=block.view,
            height=block.height,
            block_hash=block.block_hash,
            started_at=self.started_at,
            elapsed_s=now - self.started_at,
            view_changes=self.views_failed,
        )
        self.started_at, self.views_failed = now, 0
        return done
