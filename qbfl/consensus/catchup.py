"""Catch-up of a node that fell behind: whom to ask for blocks, and what to answer (DESIGN §6)."""

from __future__ import annotations

from qbfl.consensus.chainview import ChainView
from qbfl.consensus.wire import InvalidMessage
from qbfl.ledger.block import Block

MAX_SYNC_BLOCKS = 64  # blocks per SyncResponse; a node further behind asks again from its new head


class SyncTracker:
    """Remembers the SyncRequests sent, so a stream of early blocks does not cause a request storm."""

    def __init__(self) -> None:
        self._asked_at = -1

    def should_ask(self, *, height: int, peer: int) -> bool:
        """Whether to send SyncRequest(height + 1) to `peer` now; records it when True."""
        del peer
        if self._asked_at == height:
            return False
        self._asked_at = height
        return True


def sync_blocks(chain: ChainView, from_height: int) -> tuple[Block, ...]:
    """The blocks answering SyncRequest(from_height): at most MAX_SYNC_BLOCKS, in height order."""
    if from_height < 1:
        raise InvalidMessage("sync starts at height 1")
    stop = min(chain.height, from_height + MAX_SYNC_BLOCKS - 1)
    return tuple(chain.block_at(h) for h in range(from_height, stop + 1))
