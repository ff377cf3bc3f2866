"""Timeouts that grow with the view (CometBFT's deltas): a network whose every message takes longer
than the base QBA round still commits after a few view changes; with fixed timeouts it never does."""

from __future__ import annotations

import random

import numpy as np
import pytest

from qbfl.consensus.agreement import qba_session_factory
from qbfl.consensus.inmemory import InMemoryNetwork, NetworkConditions, synthetic_genesis
from qbfl.consensus.round import ConsensusNode, RoundTimeouts
from qbfl.crypto.gf2 import random_irreducible
from qbfl.crypto.keysupply import SeededKeySupply

N, P = 7, 16
POLYS = tuple(random_irreducible(128, random.Random(5)) for _ in range(4))
DELAY = 2.0  # every message, both ways: twice the base QBA round


def _network(timeouts: RoundTimeouts) -> InMemoryNetwork:
    genesis, keys = synthetic_genesis(N, P, seed=3, round_timeout_s=6.0)

    def update(node: int, round: int) -> bytes:
        return np.random.default_rng([round, node]).normal(0, 0.1, P).astype("<f4").tobytes()

    net = InMemoryNetwork(
        seed=3,
        conditions=NetworkConditions(min_delay_s=DELAY, max_delay_s=DELAY, train_delay_s=0.1),
        updates=update,
    )
    qba = qba_session_factory(
        mode=genesis.task.qba_mode,
        keys=SeededKeySupply(3),
        f=genesis.task.committee_faults,
        seed=3,
        reuse_polynomials=POLYS,
    )
    for i in range(N):
        net.add(ConsensusNode(i, keys[i], genesis, qba=qba, clock=net.clock, timeouts=timeouts))
    net.start()
    return net


def test_growing_timeouts_commit_a_network_slower_than_its_base_timers() -> None:
    timeouts = RoundTimeouts(
        collect_s=1.0,
        qba_round_s=1.0,
        deadline_s=6.0,
        collect_delta_s=1.0,
        qba_round_delta_s=1.0,
        deadline_delta_s=3.0,
    )
    net = _network(timeouts)
    assert net.run(lambda: all(n.round > 2 for n in net.nodes.values()), max_steps=400_000)
    block = net.nodes[0].chain.block_at(1)  # type: ignore[attr-defined]
    assert block.view >= 1  # view 0's timers were shorter than the delays: it had to fail


def test_fixed_timeouts_never_commit_it() -> None:
    net = _network(RoundTimeouts(collect_s=1.0, qba_round_s=1.0, deadline_s=6.0))
    net.run(lambda: net.now > 300.0, max_steps=400_000)
    assert all(n.round == 1 for n in net.nodes.values())
    assert net.nodes[0].view >= 10  # type: ignore[attr-defined]


def test_deltas_are_validated() -> None:
    with pytest.raises(ValueError):
        RoundTimeouts(qba_round_delta_s=-1.0)
    scaled = RoundTimeouts.scaled(60.0)
    assert scaled.deadline(2, 60.0) == 60.0 + 2 * 30.0 and scaled.qba_round(0) == 6.0
