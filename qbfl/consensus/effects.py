"""Outputs of the round state machine: what the shell must send, schedule, store or report."""

from __future__ import annotations

from dataclasses import dataclass

from qbfl.consensus.events import Message, TimerKind
from qbfl.ledger.block import Block


@dataclass(frozen=True)
class Send:
    """Deliver `message` to node `to`."""

    to: int
    message: Message


@dataclass(frozen=True)
class Broadcast:
    """Deliver `message` to every other node of the roster."""

    message: Message


@dataclass(frozen=True)
class SetTimer:
    """Feed TimerFired(kind, round, view) back after `delay_s` seconds of the shell's clock."""

    kind: TimerKind
    round: int
    view: int
    delay_s: float
    seq: int = 0  # copied into TimerFired.seq


@dataclass(frozen=True)
class CommitBlock:
    """`block` was verified and appended to this node's ledger: train on it for the next round."""

    block: Block


@dataclass(frozen=True)
class ViewChanged:
    """No valid block before the deadline: the committee of `from_view` is penalised (§4.5)."""

    round: int
    from_view: int
    to_view: int


@dataclass(frozen=True)
class RoundCompleted:
    """Metrics of one finished round, measured on the injected clock."""

    round: int
    view: int
    height: int
    block_hash: bytes
    started_at: float  # when this node entered the round
    elapsed_s: float  # round start → block applied, over all views
    view_changes: int


@dataclass(frozen=True)
class ForkObserved:
    """A valid `rival` of the `held` block turned up while other effects had to be returned too
    (a buffered or synced block): the node keeps `held`; the shell should log and keep both."""

    held: Block
    rival: Block


Effect = Send | Broadcast | SetTimer | CommitBlock | ViewChanged | RoundCompleted | ForkObserved
