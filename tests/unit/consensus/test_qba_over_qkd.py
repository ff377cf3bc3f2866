"""QBA drawing its QDS keys from simulated BB84 key pools (not the seeded stand-in): success,
metering, exhaustion, background refill between instances, an eavesdropped link, paced key rate."""

from __future__ import annotations

import random

import pytest

from qbfl.consensus.qba import QbaMode, run_qba
from qbfl.crypto import gf2
from qbfl.crypto.bb84 import BB84Config
from qbfl.crypto.keypool import BackgroundRefiller, BB84SessionSource, PairwiseKeyPools
from qbfl.crypto.keysupply import SeededKeySupply
from qbfl.errors import KeyPoolExhausted, QkdAborted

COMMITTEE = (0, 1, 2, 3)
F = 1
VALUE = bytes(range(63))  # a ~500-bit consensus message
SMALL = BB84Config(n_qubits=20_000)  # ~6 000 final key bits per session at 1 % channel error


def _polys() -> gf2.CyclicPolynomialSource:
    return gf2.CyclicPolynomialSource(
        [gf2.random_irreducible(128, random.Random(s)) for s in (1, 2)]
    )


def _bits_per_pair() -> int:
    """What one detectable instance takes from the busiest pair (measured on the stand-in)."""
    probe = _CountingSupply()
    run_qba(
        mode=QbaMode.DETECTABLE, committee=COMMITTEE, leader_value=VALUE, f=F,
        keys=probe, polys=_polys(),
    )  # fmt: skip
    return max(probe.per_pair.values())


class _CountingSupply(SeededKeySupply):
    def __init__(self) -> None:
        super().__init__(0)
        self.per_pair: dict[tuple[int, int], int] = {}

    def take(self, a: int, b: int, nbits: int) -> int:
        pair = (min(a, b), max(a, b))
        self.per_pair[pair] = self.per_pair.get(pair, 0) + nbits
        return super().take(a, b, nbits)


def _qba(pools: PairwiseKeyPools):  # type: ignore[no-untyped-def]
    return run_qba(
        mode=QbaMode.DETECTABLE, committee=COMMITTEE, leader_value=VALUE, f=F,
        keys=pools, polys=_polys(),
    )  # fmt: skip


def test_qba_runs_on_bb84_keys_and_the_meter_counts_what_it_took() -> None:
    pools = PairwiseKeyPools(COMMITTEE, BB84SessionSource(SMALL, seed=1))
    pools.refill(min_bits=_bits_per_pair())
    before = pools.meter()
    assert before.sessions >= len(pools.pairs) and before.consumed_bits == 0
    out = _qba(pools)
    assert all(v == VALUE for v in out.outputs.values())
    after = pools.meter()
    assert after.consumed_bits == out.key_bits > 0
    assert after.available_bits == before.available_bits - out.key_bits


def test_an_empty_pool_stops_qba_with_key_pool_exhausted() -> None:
    pools = PairwiseKeyPools(COMMITTEE, BB84SessionSource(SMALL, seed=2))
    with pytest.raises(KeyPoolExhausted):
        _qba(pools)
    # one pool short, the rest full: the error still surfaces (one-time keys are never reused)
    pools.refill(min_bits=_bits_per_pair())
    pools.take(0, 2, pools.available_bits(0, 2) - 8)  # the leader signs over its own pairs
    with pytest.raises(KeyPoolExhausted):
        _qba(pools)


def test_background_refiller_keeps_consecutive_instances_supplied() -> None:
    need = _bits_per_pair()
    pools = PairwiseKeyPools(COMMITTEE, BB84SessionSource(SMALL, seed=3))
    refiller = BackgroundRefiller(pools, low_water_bits=need, target_bits=need)
    refiller.run_once()  # the initial fill
    refiller.start()
    try:
        for _ in range(4):
            out = _qba(pools)
            assert all(v == VALUE for v in out.outputs.values())
            # each instance drains pools below the low-water mark; the thread refills them
            assert refiller.wait_until_stocked(timeout_s=60.0)
    finally:
        refiller.stop()
    assert not refiller.errors
    assert pools.meter().consumed_bits >= 4 * need
    assert refiller.sessions > len(pools.pairs)


def test_an_eavesdropped_link_aborts_and_its_pair_cannot_sign() -> None:
    source = BB84SessionSource(SMALL, seed=4, eavesdropped=[(0, 3)])
    pools = PairwiseKeyPools(COMMITTEE, source, max_aborts=2)
    refiller = BackgroundRefiller(pools, low_water_bits=1, target_bits=_bits_per_pair())
    refiller.run_once()
    assert len(refiller.errors) == 1 and isinstance(refiller.errors[0], QkdAborted)
    assert "0–3" in str(refiller.errors[0])
    assert pools.available_bits(0, 3) == 0
    assert pools.available_bits(0, 2) > 0
    with pytest.raises(KeyPoolExhausted):
        _qba(pools)
    assert not refiller.wait_until_stocked(timeout_s=0.2)  # not started: nothing restocks it


def test_pace_sees_each_session_at_the_configured_key_rate() -> None:
    waited: list[float] = []
    config = BB84Config(n_qubits=20_000, key_rate=4e5)
    pools = PairwiseKeyPools([0, 1], BB84SessionSource(config, seed=5), pace=waited.append)
    sessions = pools.refill(min_bits=10_000)
    assert sessions == len(waited) >= 2
    assert waited == pytest.approx([20_000 / 4e5] * sessions)
    assert pools.meter().simulated_seconds == pytest.approx(sum(waited))


def test_consensus_rounds_run_their_qba_on_qkd_keys() -> None:
    """Alg. 3 over the in-memory network with every committee's QBA keyed from BB84 pools."""
    import numpy as np

    from qbfl.consensus.agreement import qba_session_factory
    from qbfl.consensus.inmemory import InMemoryNetwork, SafetyMonitor, synthetic_genesis
    from qbfl.consensus.round import ConsensusNode, RoundTimeouts

    n, p = 7, 16
    genesis, keys = synthetic_genesis(n, p, seed=9, committee_size=5, round_timeout_s=10.0)
    pools = PairwiseKeyPools(range(n), BB84SessionSource(SMALL, seed=9))
    pools.refill(min_bits=8 * _bits_per_pair())  # a few rounds' worth for any committee
    stocked = pools.meter().available_bits

    def update(node: int, round: int) -> bytes:
        return np.random.default_rng([node, round]).normal(0, 0.1, p).astype("<f4").tobytes()

    net = InMemoryNetwork(seed=9, updates=update, monitor=SafetyMonitor(frozenset(range(n))))
    session = qba_session_factory(
        mode=genesis.task.qba_mode, keys=pools, f=genesis.task.committee_faults, seed=9,
        reuse_polynomials=[gf2.random_irreducible(128, random.Random(s)) for s in range(4)],
    )  # fmt: skip
    for i in range(n):
        net.add(
            ConsensusNode(
                i,
                keys[i],
                genesis,
                qba=session,
                clock=net.clock,
                timeouts=RoundTimeouts(collect_s=1.0, qba_round_s=0.5, deadline_s=6.0),
            )  # fmt: skip
        )
    net.start()
    assert net.run(lambda: all(net.nodes[i].chain.height >= 3 for i in range(n)), max_steps=200_000)
    assert len({net.nodes[i].chain.block_at(3).block_hash for i in range(n)}) == 1
    used = pools.meter().consumed_bits
    assert used > 0 and pools.meter().available_bits == stocked - used
    # late messages of a finished round are normal; a key shortage or anything else is not
    assert {reason for _, reason in net.rejections} <= {"StaleRound"}
