"""verify_block: one test per defect, a valid chain with view changes, fork and duplicate handling."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from qbfl.consensus.stakes import MAX_VIEWS_PER_ROUND, StakeLedger
from qbfl.crypto.signing import SigningKey
from qbfl.errors import ForkDetected
from qbfl.ledger.block import Block, CommitteeVote, make_block
from qbfl.ledger.chain import BlockDefect, Chain, InvalidBlock, verify_block, verify_chain
from qbfl.ledger.genesis import GenesisBlock
from qbfl.ledger.signer import digest
from qbfl.ledger.store import InMemoryLedgerStore, NotExtendingHead

from .conftest import build_chain, next_block, params_bytes

VIEWS = {2: 1, 4: 3}


@pytest.fixture(scope="module")
def chain(genesis: GenesisBlock, keys: dict[int, SigningKey]) -> list[Block]:
    return build_chain(genesis, keys, 5, seed=11, views=VIEWS)


def _verify(genesis: GenesisBlock, chain: list[Block], block: Block, at: int | None = None) -> None:
    """Verify `block` as a candidate for height `at` (default: its own) on the valid chain."""
    at = block.height if at is None else at
    ledger = StakeLedger(genesis)
    for earlier in chain[: at - 1]:
        ledger.apply(earlier)
    prev = genesis if at == 1 else chain[at - 2]
    verify_block(block, prev=prev, genesis=genesis, stakes_before=ledger.stakes)


def test_valid_chain_with_view_changes_verifies(genesis: GenesisBlock, chain: list[Block]) -> None:
    stakes = verify_chain(genesis, chain)
    assert [b.view for b in chain] == [0, 1, 0, 3, 0]
    assert sum(stakes.values()) == 8 + 5 * 4 - 3 * (1 + 3)  # rewards minus view penalties


def _mutations(b: Block, keys: dict[int, SigningKey]) -> dict[BlockDefect, Block]:
    r = dataclasses.replace
    outsider = next(i for i in range(8) if i not in b.committee)
    nan_update = params_bytes([np.nan] + [0.0] * 5)
    members_sig = {v.member_id: v.signature for v in b.votes}
    first, second = sorted(members_sig)[:2]
    swapped = (CommitteeVote(first, members_sig[second]), CommitteeVote(second, members_sig[first]))
    return {
        BlockDefect.HEIGHT: r(b, height=b.height + 1),
        BlockDefect.PREV_HASH: r(b, prev_hash=b"\x00" * 32),
        BlockDefect.ROUND: r(b, round=b.round + 1),
        BlockDefect.VIEW: r(b, view=MAX_VIEWS_PER_ROUND + 1),
        BlockDefect.COMMITTEE: r(b, committee=tuple(reversed(b.committee))),
        BlockDefect.LEADER: r(b, leader=b.committee[1]),
        BlockDefect.UPDATE_HASH: r(b, update=params_bytes(np.ones(6))),
        BlockDefect.UPDATE: r(b, update=nan_update, update_hash=digest(nan_update)),
        BlockDefect.SELECTED: r(b, selected=(3, 99)),
        BlockDefect.VOTE_NOT_MEMBER: r(
            b,
            votes=tuple(
                sorted(
                    [*b.votes, b.consensus_message().sign_vote(outsider, keys[outsider])],
                    key=lambda v: v.member_id,
                )
            ),
        ),
        BlockDefect.VOTE_SIGNATURE: r(b, votes=swapped + b.votes[2:]),
        BlockDefect.TOO_FEW_VOTES: r(b, votes=b.votes[:1]),
        BlockDefect.LEADER_SIGNATURE: b.signed_by_leader(keys[b.committee[1]]),
    }


@pytest.mark.parametrize("defect", list(BlockDefect))
def test_each_defect_is_named(
    defect: BlockDefect, genesis: GenesisBlock, chain: list[Block], keys: dict[int, SigningKey]
) -> None:
    block = chain[3]  # view 3: the committee depends on replayed penalties
    bad = _mutations(block, keys)[defect]
    with pytest.raises(InvalidBlock) as info:
        _verify(genesis, chain, bad, at=block.height)
    assert info.value.defect is defect
    assert info.value.height == bad.height


def test_wrong_size_update_and_empty_selection(genesis: GenesisBlock, chain: list[Block]) -> None:
    block = chain[0]
    short = params_bytes([0.0] * 5)
    for bad, defect in [
        (dataclasses.replace(block, update=short, update_hash=digest(short)), BlockDefect.UPDATE),
        (dataclasses.replace(block, selected=()), BlockDefect.SELECTED),
    ]:
        with pytest.raises(InvalidBlock) as info:
            _verify(genesis, chain, bad)
        assert info.value.defect is defect


def test_leader_signature_accepted(
    genesis: GenesisBlock, chain: list[Block], keys: dict[int, SigningKey]
) -> None:
    block = chain[1]
    _verify(genesis, chain, block.signed_by_leader(keys[block.leader]))


def test_view_zero_committee_rejected_for_a_later_view(
    genesis: GenesisBlock, chain: list[Block], keys: dict[int, SigningKey]
) -> None:
    """A block claiming view 1 must carry view 1's committee, drawn after view 0's penalty."""
    block = chain[1]
    ledger = StakeLedger(genesis)
    ledger.apply(chain[0])
    view0 = ledger.committee(0).members
    assert view0 != block.committee
    with pytest.raises(InvalidBlock) as info:
        _verify(genesis, chain, dataclasses.replace(block, committee=view0, leader=view0[0]))
    assert info.value.defect is BlockDefect.COMMITTEE


def test_chain_accepts_rejects_duplicates_and_detects_forks(
    genesis: GenesisBlock, chain: list[Block], keys: dict[int, SigningKey]
) -> None:
    node = Chain(InMemoryLedgerStore(genesis))
    for block in chain[:3]:
        assert node.accept(block) is True
    assert node.accept(chain[1]) is False  # the same block announced twice
    with pytest.raises(NotExtendingHead):
        node.accept(chain[4])
    # A rival for height 2: same round and view, other update, properly signed by the committee.
    rival = next_block(
        genesis, _ledger_at(genesis, chain, 1), keys, np.random.default_rng(99), view=1
    )
    assert rival.block_hash != chain[1].block_hash
    with pytest.raises(ForkDetected, match="height 2"):
        node.accept(rival)
    with pytest.raises(InvalidBlock):
        node.accept(dataclasses.replace(rival, votes=rival.votes[:1]))
    assert node.height == 3
    assert node.stakes == verify_chain(genesis, chain[:3])


def test_chain_rebuilds_from_store_and_rejects_invalid(
    genesis: GenesisBlock, chain: list[Block]
) -> None:
    store = InMemoryLedgerStore(genesis)
    for block in chain:
        store.append(block)  # stores check links only
    assert Chain(store).stakes == verify_chain(genesis, chain)
    bad_store = InMemoryLedgerStore(genesis)
    bad_store.append(dataclasses.replace(chain[0], votes=chain[0].votes[:1]))
    with pytest.raises(InvalidBlock):
        Chain(bad_store)


def test_block_not_signed_over_other_round(
    genesis: GenesisBlock, chain: list[Block], keys: dict[int, SigningKey]
) -> None:
    """Votes from round 1 cannot be reused for a block with the same content at height 1, view 1."""
    block = chain[0]
    moved = make_block(
        height=1,
        round=1,
        view=1,
        prev_hash=block.prev_hash,
        committee=StakeLedger(genesis).committee(1).members,
        selected=block.selected,
        update=block.update,
        votes=block.votes,
    )
    with pytest.raises(InvalidBlock):
        _verify(genesis, chain, moved)


def _ledger_at(genesis: GenesisBlock, chain: list[Block], height: int) -> StakeLedger:
    ledger = StakeLedger(genesis)
    for block in chain[:height]:
        ledger.apply(block)
    return ledger
