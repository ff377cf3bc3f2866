"""Round messages that nodes exchange besides ledger records (proposal, QBA envelope, vote, sync)."""

from __future__ import annotations

from dataclasses import dataclass

from qbfl.errors import QbflError
from qbfl.ledger.block import Block, CommitteeVote, ConsensusMessage


class InvalidMessage(QbflError):
    """A round message breaks the protocol (wrong sender or role, equivocation, wrong value)."""


@dataclass(frozen=True)
class Proposal:
    """The leader's aggregate for one (round, view), sent to the committee beside the QBA broadcast.

    `inputs` names the submissions the leader aggregated over: members recompute Alg. 2 over
    exactly these (they must hold every one), so an honest member never compares against a
    different input set (the paper assumes consistent updates, §4.5; this makes it checkable).
    """

    round: int
    view: int
    inputs: tuple[int, ...]  # sorted client ids
    update: bytes  # the leader's aggregate, float32 little-endian
    message: ConsensusMessage


@dataclass(frozen=True)
class QbaEnvelope:
    """One QBA protocol message of a (round, view), opaque to the round logic."""

    round: int
    view: int
    payload: object


@dataclass(frozen=True)
class VoteMessage:
    """A member's ML-DSA vote on the message it signed (Alg. 3 lines 11–13)."""

    round: int
    view: int
    message: ConsensusMessage
    vote: CommitteeVote


@dataclass(frozen=True)
class SyncRequest:
    """Ask a peer for its blocks from `from_height` on (catch-up after missing blocks)."""

    from_height: int


@dataclass(frozen=True)
class SyncResponse:
    """Blocks in height order answering a SyncRequest."""

    blocks: tuple[Block, ...]
