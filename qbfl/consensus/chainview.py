"""A node's verified view of the chain: blocks by height, stakes before each height, block checks."""

from __future__ import annotations

import numpy as np

from qbfl.consensus.committee import Committee
from qbfl.consensus.stakes import StakeLedger
from qbfl.errors import ForkDetected
from qbfl.ledger.block import Block
from qbfl.ledger.chain import BlockDefect, InvalidBlock, verify_block
from qbfl.ledger.genesis import GenesisBlock


class BlockFork(ForkDetected):
    """Two valid blocks at one height: `held` (applied here, kept) and `rival`, both as evidence."""

    def __init__(self, held: Block, rival: Block, detail: str = "") -> None:
        self.held = held
        self.rival = rival
        super().__init__(
            f"a second valid block at height {held.height}: held view {held.view} "
            f"{held.block_hash.hex()[:16]}…, rival view {rival.view} "
            f"{rival.block_hash.hex()[:16]}…" + (f" ({detail})" if detail else "")
        )


class ChainView:
    """Blocks this node applied, the stakes before each height, and the verification of a next block."""

    def __init__(self, genesis: GenesisBlock) -> None:
        self.genesis = genesis
        self.blocks: list[Block] = []
        self._ledger = StakeLedger(genesis)
        self._size = self._ledger.committee_size
        # index h−1: stakes before height h, to verify a competing block at an old height
        self._stakes_before: list[dict[int, int]] = [self._ledger.stakes]

    @property
    def height(self) -> int:
        return len(self.blocks)

    @property
    def head_hash(self) -> bytes:
        return self.blocks[-1].block_hash if self.blocks else self.genesis.block_hash

    @property
    def stakes(self) -> dict[int, int]:
        """Stakes after the head (before any penalty of the round in progress)."""
        return dict(self._stakes_before[-1])

    def previous_update(self) -> np.ndarray | None:
        """The last block's aggregate: Alg. 2's `previous` (None before the first block)."""
        if not self.blocks:
            return None
        return np.frombuffer(self.blocks[-1].update, dtype="<f4")

    def block_at(self, height: int) -> Block:
        return self.blocks[height - 1]

    def committee(self, view: int) -> Committee:
        """The committee of `view` of the round in progress (failed views penalised first)."""
        return self._ledger.committee(view)

    def verify(self, block: Block, *, height: int | None = None) -> None:
        """Raise InvalidBlock (qbfl.ledger.chain, with its defect) unless `block` is a valid block at
        `height` (default: the next one) on this chain (DESIGN §5 step 4)."""
        height = self.height + 1 if height is None else height
        if not 1 <= height <= self.height + 1:
            raise InvalidBlock(BlockDefect.HEIGHT, block.height, f"head is {self.height}")
        prev = self.blocks[height - 2] if height > 1 else self.genesis
        next_height = height == self.height + 1
        verify_block(
            block,
            prev=prev,
            genesis=self.genesis,
            stakes_before=self._stakes_before[height - 1],
            expected_param_count=self.genesis.param_count,
            # the round in progress: its views' committees are kept (StakeLedger.committee), so
            # blocks and view changes of this round draw each committee once
            committee_of_view=self._ledger.committee if next_height else None,
        )

    def apply(self, block: Block) -> None:
        """Append a verified next block; stakes follow qbfl.consensus.stakes (Alg. 3 lines 18–22)."""
        self._stakes_before.append(self._ledger.apply(block))
        self.blocks.append(block)
