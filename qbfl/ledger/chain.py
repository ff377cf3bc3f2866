"""Block verification (pure) and a verified chain over a store: what a node runs on every block it sees."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from enum import Enum

from qbfl.consensus.committee import Committee
from qbfl.consensus.stakes import MAX_VIEWS_PER_ROUND, StakeLedger, committee_at_view
from qbfl.errors import ForkDetected, InvalidSignature, InvalidUpdate, QbflError
from qbfl.ledger.block import BLOCK_CONTEXT, VOTE_CONTEXT, Block, check_update
from qbfl.ledger.genesis import GenesisBlock, verify_genesis
from qbfl.ledger.signer import HASH_LEN, digest, verify_signature
from qbfl.ledger.store import LedgerStore, NotExtendingHead


class BlockDefect(Enum):
    """Why a block was rejected; one value per check of verify_block."""

    HEIGHT = "height is not prev + 1"
    PREV_HASH = "prev_hash is not the previous block's hash"
    ROUND = "round is not prev round + 1"
    VIEW = "view out of range"
    COMMITTEE = "committee differs from the locally recomputed one"
    LEADER = "leader is not committee[0]"
    UPDATE_HASH = "update_hash is not blake3(update)"
    UPDATE = "update has the wrong size or is not finite"
    SELECTED = "selected participants are empty or not on the roster"
    VOTE_NOT_MEMBER = "a vote comes from outside the committee"
    VOTE_SIGNATURE = "a vote signature does not verify"
    TOO_FEW_VOTES = "not more than Nc/2 valid votes"
    LEADER_SIGNATURE = "leader signature does not verify"


class InvalidBlock(QbflError):
    """A block fails verification; `defect` says which check and `height` where."""

    def __init__(self, defect: BlockDefect, height: int, detail: str = "") -> None:
        self.defect = defect
        self.height = height
        super().__init__(f"block {height}: {defect.value}" + (f" ({detail})" if detail else ""))


def verify_block(
    block: Block,
    *,
    prev: Block | GenesisBlock,
    genesis: GenesisBlock,
    stakes_before: Mapping[int, int],
    expected_param_count: int | None = None,
    committee_of_view: Callable[[int], Committee] | None = None,
) -> None:
    """Raise InvalidBlock unless `block` validly extends `prev` (DESIGN §5 step 4).

    `stakes_before` are the stakes after `prev` (StakeLedger.stakes); the committee of the
    block's view is recomputed from them, replaying the penalties of the round's failed views.
    A caller that keeps that replay for `prev` (StakeLedger.committee) passes it as
    `committee_of_view`, so blocks of one round do not redo it.

    Checks run cheapest first, because anyone can send a block and an unsigned one costs
    nothing to forge: links and structure, the update (one hash), the vote count, every vote's
    ML-DSA signature under the roster key of its claimed member (≤ Nc verifications), and only
    then the committee replay (up to MAX_VIEWS_PER_ROUND draws), which a block reaches only with
    more than Nc/2 valid roster signatures on its consensus message.
    """
    h = block.height

    def fail(defect: BlockDefect, detail: str = "") -> InvalidBlock:
        return InvalidBlock(defect, h, detail)

    if h != prev.height + 1:
        raise fail(BlockDefect.HEIGHT, f"prev is at {prev.height}")
    if block.prev_hash != prev.block_hash:
        raise fail(BlockDefect.PREV_HASH)
    if block.round != prev.round + 1:
        raise fail(BlockDefect.ROUND, f"got {block.round}, prev round {prev.round}")
    if block.view > MAX_VIEWS_PER_ROUND:
        raise fail(BlockDefect.VIEW, f"{block.view} > {MAX_VIEWS_PER_ROUND}")
    size = min(genesis.task.committee_size, len(genesis.roster))
    if len(block.committee) != size:  # the size is known without a replay
        raise fail(BlockDefect.COMMITTEE, f"{len(block.committee)} members, expected {size}")
    if len(block.update_hash) != HASH_LEN or block.update_hash != digest(block.update):
        raise fail(BlockDefect.UPDATE_HASH)
    try:
        check_update(block.update, expected_param_count or genesis.param_count)
    except InvalidUpdate as exc:
        raise fail(BlockDefect.UPDATE, str(exc)) from exc
    keys = genesis.public_keys
    if not block.selected or not set(block.selected) <= keys.keys():
        raise fail(BlockDefect.SELECTED, f"{block.selected}")
    if 2 * len(block.votes) <= size:  # Alg. 3 line 4: |σ| > Nc/2
        raise fail(BlockDefect.TOO_FEW_VOTES, f"{len(block.votes)} of {size}")
    if len(block.votes) > size:  # ids are unique, so some vote is from outside the committee
        raise fail(BlockDefect.VOTE_NOT_MEMBER, f"{len(block.votes)} votes for {size} seats")
    message = block.consensus_message().encode()
    # Every vote a block carries must be valid, not just a majority: a leader cannot pad a
    # block with junk that changes its hash (and so the next committee) at will.
    for vote in block.votes:  # ids are sorted and unique by the encoding
        key = keys.get(vote.member_id)
        if key is None:
            raise fail(BlockDefect.VOTE_NOT_MEMBER, f"member {vote.member_id} is not on the roster")
        try:
            verify_signature(key, message, vote.signature, context=VOTE_CONTEXT)
        except InvalidSignature as exc:
            raise fail(BlockDefect.VOTE_SIGNATURE, f"member {vote.member_id}") from exc
    if committee_of_view is not None:
        committee = committee_of_view(block.view)
    else:
        committee = committee_at_view(
            prev.committee_seed, stakes_before, size=size, view=block.view
        )
    if block.committee != committee.members:
        raise fail(BlockDefect.COMMITTEE, f"got {block.committee}, expected {committee.members}")
    if block.leader != committee.leader:
        raise fail(BlockDefect.LEADER)
    members = set(committee.members)
    outsiders = [v.member_id for v in block.votes if v.member_id not in members]
    if outsiders:
        raise fail(BlockDefect.VOTE_NOT_MEMBER, f"members {outsiders}")
    if block.leader_signature is not None:
        try:
            verify_signature(
                keys[block.leader],
                block.leader_payload(),
                block.leader_signature,
                context=BLOCK_CONTEXT,
            )
        except InvalidSignature as exc:
            raise fail(BlockDefect.LEADER_SIGNATURE) from exc


def verify_chain(genesis: GenesisBlock, blocks: Sequence[Block]) -> dict[int, int]:
    """Verify genesis and every block in order; return the stakes after the last one."""
    verify_genesis(genesis)
    ledger = StakeLedger(genesis)
    prev: Block | GenesisBlock = genesis
    for block in blocks:
        verify_block(
            block,
            prev=prev,
            genesis=genesis,
            stakes_before=ledger.stakes,
            committee_of_view=ledger.committee,  # the replay apply() reuses
        )
        ledger.apply(block)
        prev = block
    return ledger.stakes


class Chain:
    """A store plus the stakes it implies; `accept` verifies a block before it is stored.

    On construction every stored block is verified in full (signatures, committees), which
    also rebuilds the stakes; the store itself already checked hashes and links on open.
    """

    def __init__(self, store: LedgerStore, *, expected_param_count: int | None = None) -> None:
        self._store = store
        self._genesis = store.genesis
        self._param_count = expected_param_count or self._genesis.param_count
        verify_genesis(self._genesis)
        self._stakes = StakeLedger(self._genesis)
        prev: Block | GenesisBlock = self._genesis
        for block in store.range(1, store.height + 1):
            self._verify(block, prev, self._stakes.stakes, self._stakes.committee)
            self._stakes.apply(block)
            prev = block

    @property
    def store(self) -> LedgerStore:
        return self._store

    @property
    def genesis(self) -> GenesisBlock:
        return self._genesis

    @property
    def height(self) -> int:
        return self._store.height

    def head(self) -> Block | GenesisBlock:
        return self._store.head()

    @property
    def stakes(self) -> dict[int, int]:
        """Stakes after the head: the ones the next round's committee is drawn from."""
        return self._stakes.stakes

    def committee(self, view: int = 0) -> Committee:
        """The next round's committee at `view`, drawn from the head's hash and the stakes."""
        return self._stakes.committee(view)

    def _verify(
        self,
        block: Block,
        prev: Block | GenesisBlock,
        stakes: Mapping[int, int],
        committee_of_view: Callable[[int], Committee] | None = None,
    ) -> None:
        verify_block(
            block,
            prev=prev,
            genesis=self._genesis,
            stakes_before=stakes,
            expected_param_count=self._param_count,
            committee_of_view=committee_of_view,
        )

    def accept(self, block: Block) -> bool:
        """Verify and append `block`; False if it is already stored (a duplicate announcement).

        Raises InvalidBlock for a bad block, ForkDetected for a valid block that conflicts with
        a stored one, and the store's NotExtendingHead for a block beyond head + 1.
        """
        height = self._store.height
        if block.height <= height:
            return self._check_known_height(block)
        if block.height > height + 1:  # the node is behind: it must sync the gap first
            raise NotExtendingHead(f"block {block.height} is ahead of the head at {height}")
        self._verify(block, self._store.head(), self._stakes.stakes, self._stakes.committee)
        self._store.append(block)
        self._stakes.apply(block)
        return True

    def _check_known_height(self, block: Block) -> bool:
        if block.height == 0:
            raise InvalidBlock(BlockDefect.HEIGHT, 0, "height 0 is the genesis")
        stored = self._store.get(block.height)
        if stored.block_hash == block.block_hash:
            return False
        prev = self._store.get(block.height - 1)
        replay = StakeLedger(self._genesis)
        for earlier in self._store.range(1, block.height):
            replay.apply(earlier)
        self._verify(block, prev, replay.stakes)  # InvalidBlock if the rival is not valid
        raise ForkDetected(
            f"height {block.height}: stored block {stored.block_hash.hex()[:16]}… and valid "
            f"rival {block.block_hash.hex()[:16]}… (round {block.round}, view {block.view})"
        )
