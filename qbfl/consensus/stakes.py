"""Stakes derived from the chain alone (Alg. 3 lines 18–22, DESIGN §5 step 5): same chain, same stakes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from qbfl.consensus.committee import Committee, select_committee

if TYPE_CHECKING:  # the ledger imports this module to verify blocks: no import cycle at run time
    from qbfl.ledger.block import Block
    from qbfl.ledger.genesis import GenesisBlock

# A block's view is the number of failed views before it in its round, each of which costs one
# committee draw to replay (0.15–0.5 ms at N = 200 on the 2-core dev VM). A round reaches view 1 024
# only after 1 024 consecutive failed views: 17 hours at the default 60 s round timeout, with the
# committee of every one of them penalised. That is an operator's emergency, not a round, so
# views beyond it are refused; the cap bounds a replay to 0.2–0.5 s at N = 200, and verify_block
# only replays for a block carrying more than Nc/2 valid roster signatures (docs/consensus.md,
# "Bounds a peer can make a node hold").
MAX_VIEWS_PER_ROUND = 1024

PENALTY = 1  # Alg. 3 line 22: s(j) ← s(j) − 1 for j in the failed committee
REWARD = 1  # Alg. 3 line 19: s(j) ← s(j) + 1 for each j in the aggregation


def initial_stakes(genesis: GenesisBlock) -> dict[int, int]:
    """§4.2: all clients begin with equal stake (TaskSpec.initial_stake)."""
    return {node_id: genesis.task.initial_stake for node_id in genesis.node_ids}


def _check_view(view: int) -> None:
    if not 0 <= view <= MAX_VIEWS_PER_ROUND:
        raise ValueError(f"view {view} is outside 0..{MAX_VIEWS_PER_ROUND}")


class ViewReplay:
    """The committees of one round's views, drawn in view order and kept.

    Every view k < v failed (no block), so its committee — drawn with the stakes in force at
    view k — lost PENALTY each before view k + 1 was drawn (Alg. 3 lines 21–23). Reaching view v
    therefore costs v + 1 draws; keeping them makes every later question about views ≤ v free,
    so neither a node stepping through view changes nor repeated blocks of one round redo the
    replay. Memory: at most MAX_VIEWS_PER_ROUND + 1 committees and one stakes table.
    """

    def __init__(self, seed: bytes, stakes_before: Mapping[int, int], *, size: int) -> None:
        self._seed = seed
        self._size = size
        self._before = dict(stakes_before)
        self._committees: list[Committee] = []
        self._frontier = dict(stakes_before)  # in force at view len(self._committees)

    def committee(self, view: int) -> Committee:
        """The committee of `view` (ValueError beyond MAX_VIEWS_PER_ROUND)."""
        _check_view(view)
        while len(self._committees) <= view:
            drawn = select_committee(
                self._seed, self._frontier, size=self._size, view=len(self._committees)
            )
            self._committees.append(drawn)
            for member in drawn.members:
                self._frontier[member] -= PENALTY
        return self._committees[view]

    def stakes_at(self, view: int) -> dict[int, int]:
        """Stakes in force when `view` draws its committee: the failed views' penalties applied."""
        _check_view(view)
        if view > 0:
            self.committee(view - 1)
        stakes = dict(self._before)
        for failed in self._committees[:view]:
            for member in failed.members:
                stakes[member] -= PENALTY
        return stakes


def stakes_at_view(
    seed: bytes, stakes_before: Mapping[int, int], *, size: int, view: int
) -> dict[int, int]:
    """Stakes in force when view `view` of a round draws its committee (see ViewReplay)."""
    return ViewReplay(seed, stakes_before, size=size).stakes_at(view)


def committee_at_view(
    seed: bytes, stakes_before: Mapping[int, int], *, size: int, view: int
) -> Committee:
    """The committee of (round, view), replaying the penalties of the round's failed views."""
    return ViewReplay(seed, stakes_before, size=size).committee(view)


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
        self._views = ViewReplay(self._seed, self._stakes, size=self._size)

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
        """The committee for the next round at `view`, as every node computes it locally.

        Kept per view until the next block: stepping through view changes, and verifying blocks
        of the round in progress, draw each view's committee once.
        """
        return self._views.committee(view)

    def apply(self, block: Block) -> dict[int, int]:
        """Apply one accepted block; return the stakes after it."""
        if block.height != self._height + 1 or block.prev_hash != self._head_hash:
            raise ValueError(
                f"block {block.height} does not follow height {self._height}: "
                "stakes must be applied in chain order"
            )
        stakes = self._views.stakes_at(block.view)
        for participant in block.selected:  # Alg. 3 line 19
            if participant not in stakes:
                raise ValueError(f"selected participant {participant} is not on the roster")
            stakes[participant] += REWARD
        self._stakes = stakes
        self._head_hash = block.block_hash
        self._seed = block.committee_seed
        self._height = block.height
        self._views = ViewReplay(self._seed, self._stakes, size=self._size)
        return self.stakes


def derive_stakes(genesis: GenesisBlock, blocks: Sequence[Block]) -> dict[int, int]:
    """Stakes after `blocks` (heights 1..n in order), from the chain alone."""
    ledger = StakeLedger(genesis)
    for block in blocks:
        ledger.apply(block)
    return ledger.stakes
