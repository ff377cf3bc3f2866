"""Fixtures for ledger tests: deterministic ML-DSA keys, a small task and a signed genesis."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from qbfl.consensus.stakes import StakeLedger
from qbfl.crypto.signing import SigningKey
from qbfl.ledger.block import Block, make_block
from qbfl.ledger.genesis import GenesisBlock, RosterEntry, TaskSpec, make_genesis

N_NODES = 8
PARAMS = 6


def node_key(node_id: int) -> SigningKey:
    return SigningKey.from_seed(bytes([node_id + 1]) * 32)


def params_bytes(values: list[float] | np.ndarray) -> bytes:
    return np.asarray(values, dtype="<f4").tobytes()


@pytest.fixture(scope="session")
def keys() -> dict[int, SigningKey]:
    return {i: node_key(i) for i in range(N_NODES)}


@pytest.fixture(scope="session")
def publisher_key() -> SigningKey:
    return SigningKey.from_seed(b"\xee" * 32)


@pytest.fixture(scope="session")
def task() -> TaskSpec:
    return TaskSpec(
        task="mnist",
        model="mpo-fcnn",
        n_nodes=N_NODES,
        rounds=10,
        seed=3,
        lr=0.05,
        committee_size=3,
    )


@pytest.fixture(scope="session")
def genesis(task: TaskSpec, keys: dict[int, SigningKey], publisher_key: SigningKey) -> GenesisBlock:
    roster = [RosterEntry(i, k.public_key, f"127.0.0.1:{7000 + i}") for i, k in keys.items()]
    return make_genesis(task, params_bytes(np.zeros(PARAMS)), roster, publisher_key)


def next_block(
    genesis: GenesisBlock,
    ledger: StakeLedger,
    keys: dict[int, SigningKey],
    rng: np.random.Generator,
    *,
    view: int = 0,
    n_votes: int | None = None,
) -> Block:
    """A valid block on top of `ledger`'s head: the right committee, a majority of real votes."""
    committee = ledger.committee(view)
    prev_hash = ledger.head_hash
    update = params_bytes(rng.normal(size=genesis.param_count))
    selected = tuple(sorted(rng.choice(genesis.node_ids, size=4, replace=False).tolist()))
    draft = make_block(
        height=ledger.height + 1,
        round=ledger.height + 1,
        view=view,
        prev_hash=prev_hash,
        committee=committee.members,
        selected=selected,
        update=update,
    )
    message = draft.consensus_message()
    voters = committee.members[: n_votes or len(committee.members) // 2 + 1]
    votes = tuple(message.sign_vote(m, keys[m]) for m in voters)
    return dataclasses.replace(draft, votes=tuple(sorted(votes, key=lambda v: v.member_id)))


def build_chain(
    genesis: GenesisBlock,
    keys: dict[int, SigningKey],
    n_blocks: int,
    *,
    seed: int = 0,
    views: dict[int, int] | None = None,
) -> list[Block]:
    """`n_blocks` valid blocks; `views` maps a height to the view its round ended in."""
    rng = np.random.default_rng(seed)
    ledger = StakeLedger(genesis)
    blocks = []
    for height in range(1, n_blocks + 1):
        block = next_block(genesis, ledger, keys, rng, view=(views or {}).get(height, 0))
        ledger.apply(block)
        blocks.append(block)
    return blocks
