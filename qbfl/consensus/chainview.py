"""A node's verified view of the chain: blocks by height, stakes before each height, block checks."""

from __future__ import annotations

import numpy as np

from qbfl.consensus.committee import Committee
from qbfl.consensus.stakes import StakeLedger, committee_at_view
from qbfl.errors import QbflError
from qbfl.ledger.block import Block, check_update
from qbfl.ledger.genesis import GenesisBlock
from qbfl.ledger.signer import digest


class InvalidBlock(QbflError):
    """A block fails verification; the message says which check."""


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
        """Raise InvalidBlock (or InvalidSignature/InvalidUpdate) unless `block` is a valid block at
        `height` (default: the next one) on this chain (DESIGN §5 step 4)."""
        height = self.height + 1 if height is None else height
        if not 1 <= height <= self.height + 1:
            raise InvalidBlock(f"cannot verify a block at height {height} (head {self.height})")
        if block.height != height:
            raise InvalidBlock(f"block height {block.height}, expected {height}")
        if block.round != height:
            raise InvalidBlock(f"block round {block.round} != height {height}")
        prev_hash = self.blocks[height - 2].block_hash if height > 1 else self.genesis.block_hash
        if block.prev_hash != prev_hash:
            raise InvalidBlock(f"block {height} does not link to the block before it (prev hash)")
        base = self._stakes_before[height - 1]
        committee = committee_at_view(prev_hash, base, size=self._size, view=block.view)
        if block.committee != committee.members or block.leader != committee.leader:
            raise InvalidBlock(
                f"block {height} view {block.view} names committee {block.committee}, "
                f"recomputed {committee.members}"
            )
        if block.update_hash != digest(block.update):
            raise InvalidBlock(f"block {height}: update hash does not match the update bytes")
        check_update(block.update, self.genesis.param_count)
        roster = self.genesis.public_keys
        if list(block.selected) != sorted(set(block.selected)) or not set(block.selected) <= set(
            roster
        ):
            raise InvalidBlock(f"block {height}: selected ids are not sorted roster members")
        message = block.consensus_message()
        signers = [v.member_id for v in block.votes]
        if len(set(signers)) != len(signers) or not set(signers) <= set(committee.members):
            raise InvalidBlock(f"block {height}: votes from non-members or duplicated")
        if 2 * len(signers) <= self._size:
            raise InvalidBlock(
                f"block {height}: {len(signers)} votes, Alg. 3 needs more than {self._size}/2"
            )
        for vote in block.votes:
            message.verify_vote(vote, roster[vote.member_id])

    def apply(self, block: Block) -> None:
        """Append a verified next block; stakes follow qbfl.consensus.stakes (Alg. 3 lines 18–22)."""
        self._stakes_before.append(self._ledger.apply(block))
        self.blocks.append(block)
