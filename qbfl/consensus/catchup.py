"""Catch-up of a node that fell behind: whom to ask for blocks, and what to answer (DESIGN §6)."""

from __future__ import annotations

from qbfl.consensus.chainview import ChainView
from qbfl.consensus.wire import MAX_SYNC_BLOCKS, InvalidMessage
from qbfl.ledger.block import Block

__all__ = ["MAX_SYNC_BLOCKS", "SyncTracker", "sync_blocks"]


class SyncTracker:
    """Which peers were asked for the blocks after one height, so catch-up neither storms nor stalls.

    One request is outstanding at a time (every honest node relays a block, so a node that fell
    behind hears of it from many peers at once). If no block arrives before the node's view
    deadline, the asked peer is presumed silent or its answer lost, and the next peer that shows
    a later block is asked; each peer at most once per height.
    """

    def __init__(self) -> None:
        self._height = -1
        self._asked: set[int] = set()
        self._waiting = False

    def should_ask(self, *, height: int, peer: int) -> bool:
        """Whether to send SyncRequest(height + 1) to `peer` now; records it when True."""
        if height != self._height:
            self._height, self._asked, self._waiting = height, set(), False
        if self._waiting or peer in self._asked:
            return False
        self._asked.add(peer)
        self._waiting = True
        return True

    def timed_out(self) -> None:
        """A view deadline passed at this height: stop waiting for the outstanding answer."""
        self._waiting = False


def sync_blocks(chain: ChainView, from_height: int) -> tuple[Block, ...]:
    """The blocks answering SyncRequest(from_height): at most MAX_SYNC_BLOCKS, in height order."""
    if from_height < 1:
        raise InvalidMessage("sync starts at height 1")
    stop = min(chain.height, from_height + MAX_SYNC_BLOCKS - 1)
    return tuple(chain.block_at(h) for h in range(from_height, stop + 1))
