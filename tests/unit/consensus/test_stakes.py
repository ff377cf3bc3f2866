"""Stakes from the chain alone: a hand-worked example, view-change penalties, and a node that was down."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qbfl.consensus.committee import select_committee
from qbfl.consensus.stakes import StakeLedger, derive_stakes, stakes_at_view
from qbfl.crypto.signing import SigningKey
from qbfl.ledger.block import Block, make_block
from qbfl.ledger.genesis import GenesisBlock, RosterEntry, TaskSpec, make_genesis
from qbfl.ledger.store import SqliteLedgerStore

PUBLISHER = SigningKey.from_seed(b"\x01" * 32)


def _genesis(n: int, committee_size: int, initial_stake: int = 1) -> GenesisBlock:
    task = TaskSpec(
        task="mnist",
        model="m",
        n_nodes=n,
        rounds=50,
        seed=0,
        lr=0.1,
        committee_size=committee_size,
        initial_stake=initial_stake,
    )
    roster = [RosterEntry(i, bytes([i]) * 8, f"n{i}") for i in range(n)]
    return make_genesis(task, np.zeros(3, "<f4").tobytes(), roster, PUBLISHER)


def _extend(
    genesis: GenesisBlock, ledger: StakeLedger, *, view: int, selected: tuple[int, ...]
) -> Block:
    """The next block as the committee of `view` would build it (stakes ignore signatures)."""
    block = make_block(
        height=ledger.height + 1,
        round=ledger.height + 1,
        view=view,
        prev_hash=ledger.head_hash,
        committee=ledger.committee(view).members,
        selected=selected,
        update=np.full(3, ledger.height, "<f4").tobytes(),
    )
    ledger.apply(block)
    return block


def test_hand_worked_example() -> None:
    """N = Nc = 3, so every committee is the whole roster and the arithmetic is by hand."""
    genesis = _genesis(3, 3)
    ledger = StakeLedger(genesis)
    assert ledger.stakes == {0: 1, 1: 1, 2: 1}
    _extend(genesis, ledger, view=0, selected=(0, 2))
    assert ledger.stakes == {0: 2, 1: 1, 2: 2}  # +1 for each selected (Alg. 3 line 19)
    _extend(genesis, ledger, view=2, selected=(1,))
    # Two failed views: the whole committee −1 twice (line 22), then +1 for node 1.
    assert ledger.stakes == {0: 0, 1: 0, 2: 0}
    _extend(genesis, ledger, view=1, selected=(0, 1, 2))
    assert ledger.stakes == {0: 0, 1: 0, 2: 0}  # −1 each, +1 each: below 0 is allowed
    _extend(genesis, ledger, view=1, selected=(2,))
    assert ledger.stakes == {0: -1, 1: -1, 2: 0}


def test_failed_views_penalise_in_sequence() -> None:
    """View k+1's committee is drawn with the stakes after view k's penalty (DESIGN §5 step 5)."""
    genesis = _genesis(12, 3, initial_stake=2)
    stakes = {i: 2 + (i % 4) for i in range(12)}
    prev = b"\x42" * 32
    expected = dict(stakes)
    for k in range(4):
        for m in select_committee(prev, expected, size=3, view=k).members:
            expected[m] -= 1
    assert stakes_at_view(prev, stakes, size=3, view=4) == expected
    assert stakes_at_view(prev, stakes, size=3, view=0) == stakes
    with pytest.raises(ValueError):
        stakes_at_view(prev, stakes, size=3, view=10_001)
    assert genesis.task.committee_size == 3


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 4), st.sets(st.integers(0, 9), min_size=1)), max_size=8))
def test_total_stake_is_conserved(rounds: list[tuple[int, set[int]]]) -> None:
    """Σ stakes = N·s0 + Σ|selected| − Nc·Σ views, whatever the committees were."""
    genesis = _genesis(10, 3)
    ledger = StakeLedger(genesis)
    for view, selected in rounds:
        _extend(genesis, ledger, view=view, selected=tuple(sorted(selected)))
    expected = 10 + sum(len(s) for _, s in rounds) - 3 * sum(v for v, _ in rounds)
    assert sum(ledger.stakes.values()) == expected


def test_node_that_was_down_derives_identical_stakes(tmp_path: Path) -> None:
    genesis = _genesis(10, 3)
    rng = np.random.default_rng(7)
    live = StakeLedger(genesis)
    store = SqliteLedgerStore(tmp_path / "peer.db", genesis)
    history = []
    for _ in range(12):
        selected = tuple(sorted(rng.choice(10, size=5, replace=False).tolist()))
        block = _extend(genesis, live, view=int(rng.integers(0, 3)), selected=selected)
        store.append(block)
        history.append(dict(live.stakes))
    store.close()
    # A node that was down since height 4 rebuilds from a peer's ledger file alone.
    with SqliteLedgerStore(tmp_path / "peer.db") as synced:
        blocks = synced.range(1, synced.height + 1)
    assert derive_stakes(genesis, blocks) == live.stakes
    late = StakeLedger(genesis)
    for block in blocks[:3]:
        late.apply(block)
    assert late.stakes == history[2]
    for block in blocks[3:]:
        late.apply(block)
    assert late.stakes == live.stakes
    assert late.committee(1) == live.committee(1)


def test_blocks_must_be_applied_in_order() -> None:
    genesis = _genesis(5, 3)
    ledger = StakeLedger(genesis)
    other = StakeLedger(genesis)
    b1 = _extend(genesis, ledger, view=0, selected=(1,))
    b2 = _extend(genesis, ledger, view=0, selected=(2,))
    with pytest.raises(ValueError, match="chain order"):
        other.apply(b2)
    other.apply(b1)
    with pytest.raises(ValueError, match="chain order"):
        other.apply(b1)
    with pytest.raises(ValueError, match="not on the roster"):
        _extend(genesis, other, view=0, selected=(99,))
