"""Inputs of the round state machine: received messages, a finished local update, and fired timers."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from qbfl.consensus.wire import (
    Proposal,
    QbaEnvelope,
    SyncRequest,
    SyncResponse,
    VoteMessage,
)
from qbfl.ledger.block import Block, UpdateSubmission


class Phase(Enum):
    """Where one node stands in the current (round, view) (Alg. 3)."""

    COLLECTING_UPDATES = "collecting-updates"  # committee member, before the collection timer
    QBA = "qba"  # leader proposed; committee runs the QBA multicast rounds
    VOTING = "voting"  # member decided (signed or not); leader gathers votes
    WAITING_FOR_BLOCK = "waiting-for-block"  # not on the committee, or done voting
    COMMITTED = "committed"  # a block for this round is applied (until the next round starts)


class TimerKind(Enum):
    """The timeouts of one (round, view); the ticker turns each into a TimerFired event."""

    COLLECT = "collect"  # members stop waiting for submissions; the leader aggregates
    QBA_ROUND = "qba-round"  # end of one QBA multicast round
    DEADLINE = "deadline"  # no valid block for this view → view change (§4.5, DESIGN §5 step 5)


@dataclass(frozen=True)
class LocalUpdateReady:
    """Local training for `round` finished outside the state machine (DESIGN §5 step 2)."""

    round: int
    update: bytes  # float32 little-endian, canonical parameter order


@dataclass(frozen=True)
class SubmissionReceived:
    sender: int
    submission: UpdateSubmission


@dataclass(frozen=True)
class ProposalReceived:
    sender: int
    proposal: Proposal


@dataclass(frozen=True)
class QbaMessageReceived:
    sender: int
    envelope: QbaEnvelope


@dataclass(frozen=True)
class VoteReceived:
    sender: int
    vote: VoteMessage


@dataclass(frozen=True)
class BlockReceived:
    sender: int
    block: Block


@dataclass(frozen=True)
class SyncRequested:
    sender: int
    request: SyncRequest


@dataclass(frozen=True)
class SyncBlocksReceived:
    sender: int
    response: SyncResponse


@dataclass(frozen=True)
class TimerFired:
    kind: TimerKind
    round: int
    view: int
    # QBA_ROUND: the multicast round the timer closes (1-based); a round already closed early by
    # its messages ignores its timer. 0: any (the current one).
    seq: int = 0


Event = (
    LocalUpdateReady
    | SubmissionReceived
    | ProposalReceived
    | QbaMessageReceived
    | VoteReceived
    | BlockReceived
    | SyncRequested
    | SyncBlocksReceived
    | TimerFired
)

Message = (
    UpdateSubmission | Proposal | QbaEnvelope | VoteMessage | Block | SyncRequest | SyncResponse
)


def event_for(sender: int, message: Message) -> Event:
    """The event a transport feeds the state machine when `message` arrives from `sender`."""
    if isinstance(message, UpdateSubmission):
        return SubmissionReceived(sender, message)
    if isinstance(message, Proposal):
        return ProposalReceived(sender, message)
    if isinstance(message, QbaEnvelope):
        return QbaMessageReceived(sender, message)
    if isinstance(message, VoteMessage):
        return VoteReceived(sender, message)
    if isinstance(message, Block):
        return BlockReceived(sender, message)
    if isinstance(message, SyncRequest):
        return SyncRequested(sender, message)
    if isinstance(message, SyncResponse):
        return SyncBlocksReceived(sender, message)
    raise TypeError(f"not a round message: {type(message).__name__}")
