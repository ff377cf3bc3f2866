"""Fixtures for ledger tests: deterministic ML-DSA keys, a small task and a signed genesis."""

from __future__ import annotations

import numpy as np
import pytest

from qbfl.crypto.signing import SigningKey
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
