"""Stakes derived from the chain alone (Alg. 3 lines 18–22, DESIGN §5 step 5): same chain, same stakes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from qbfl.consensus.committee import Committee, select_committee

if TYPE_CHECKING:  # the ledger imports this module to verify blocks: no import cycle at run time
    from qbfl.ledger.block import Block
    from qbfl.ledger.genesis import GenesisBlock

# A block's view is the number of failed views before it in its round, each of which costs
# one committee draw to replay; this bounds the work a hostile block can ask of a verifier.
MAX_VIEWS_PER_ROUND = 10_000

PENALTY = 1  # Alg. 3 line 22: s(j) ← s(j) − 1 for j in the failed committee
REWARD = 1  # Alg. 3 line 19: s(j) ← s(j) + 1 for each j in the aggregation


def initial_stakes(genesis: GenesisBlock) -> dict[int, int]:
    """§4.2: all clients begin with equal stake (TaskSpec.initial_stake)."""
    return {node_id: genesis.task.initial_stake for node_id in genesis.node_ids}


def stakes_at_view(
    seed: bytes, stakes_before: Mapping[int, int], *, size: int, view: int
) -> dict[int, int]:
    """Stakes in force when view `view` of a round draws its committee.

    Every view k < `view` failed (no block), so its committee — drawn with the stakes in force
    at view k — lost PENALTY each before view k + 1 was drawn (Alg. 3 lines 21–23).
    """
    if not 0 <= view <= MAX_VIEWS_PER_ROUND:
        raise ValueError(f"view {view} is outside 0..{MAX_VIEWS_PER_ROUND}")
    stakes = dict(stakes_before)
    for k in range(view):
        for member in select_committee(seed, stakes, size=size, view=k).members:
            stakes[member] -= PENALTY
    return stakes


def committee_at_view(
    seed: bytes, stakes_before: Mapping[int, int], *, size: int, view: int
) -> Committee:
    """The committee of (round, view), replaying the penalties of the round's failed views."""
    stakes = stakes_at_view(seed, stakes_before, size=size, view=view)
    return select_committee(seed, stakes, size=size, view=view)


class StakeLedger:
    """Stakes after each accepted block, applied one block at a time (what a running node keeps).

    It trusts that the blocks it is given were verified (qbfl.ledger.chain does that); it only
    checks that they follow one another, so a skipped block cannot silently shift stakes.
    Stakes are not floored: a client penalised below 0 keeps its debt and ranks last, and
    select_committee gives stakes ≤ 0 no weight (Eq. 5).
    """

    def __init__(self, genesis: GenesisBlock) -> None:
        self._size = min(genesis.task.committee_size, len(genesis.roster))
        self._stakes = initial_stakes(genesis)
        self._head_hash = genesis.block_hash
        self._seed = genesis.committee_seed
        self._height = 0

    @property
    def stakes(self) -> dict[int, int]:
        """A copy of the current stakes: the stakes before the next block."""
        return dict(self._stakes)

    @property
    def height(self) -> int:
        return self._height

    @property
    def head_hash(self) -> bytes:
        """Hash of the last applied block: the next block's prev_hash."""
        return self._head_hash

    @property
    def committee_seed(self) -> bytes:
        """Seed of the next committee draw (Alg. 1): the last block's committee_seed."""
        return self._seed

    @property
    def committee_size(self) -> int:
        return self._size

    def committee(self, view: int = 0) -> Committee:
        """The committee for the next round at `view`, as every node computes it locally."""
        return committee_at_view(self._seed, self._stakes, size=self._size, view=view)

    def apply(self, block: Block) -> dict[int, int]:
        """Apply one accepted block; return the stakes after it."""
        if block.height != self._height + 1 or block.prev_hash != self._head_hash:
            raise ValueError(
                f"block {block.height} does not follow height {self._height}: "
                "stakes must be applied in chain order"
            )
        stakes = stakes_at_view(self._seed, self._stakes, size=self._size, view=block.view)
        for participant in block.selected:  # Alg. 3 line 19
            if participant not in stakes:
                raise ValueError(f"selected participant {participant} is not on the roster")
            stakes[participant] += REWARD
        self._stakes = stakes
        self._head_hash = block.block_hash
        self._seed = block.committee_seed
        self._height = block.height
        return self.stakes


def derive_stakes(genesis: GenesisBlock, blocks: Sequence[Block]) -> dict[int, int]:
    """Stakes after `blocks` (heights 1..n in order), from the chain alone."""
    ledger = StakeLedger(genesis)
    for block in blocks:
        ledger.apply(block)
    return ledger.stakes
