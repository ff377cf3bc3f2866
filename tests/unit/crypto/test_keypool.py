"""Pairwise one-time key pools: exhaustion, metering, identical endpoints, refill and background refill."""

from __future__ import annotations

import threading
from collections import Counter

import numpy as np
import pytest

from qbfl.crypto.bb84 import BB84Config, QkdSessionResult, Role
from qbfl.crypto.keypool import (
    BackgroundRefiller,
    BB84SessionSource,
    KeyMismatch,
    KeyPool,
    PairwiseKeyPools,
    bits_to_int,
    pair_of,
)
from qbfl.crypto.keysupply import PairwiseKeySupply, SeededKeySupply, UnknownKeyPair
from qbfl.crypto.qkd import pack_bits
from qbfl.errors import KeyPoolExhausted, QbflError, QkdAborted


def _result(role: Role, bits: np.ndarray) -> QkdSessionResult:
    return QkdSessionResult(
        role=role,
        key=pack_bits(bits),
        key_bits=bits.size,
        n_qubits=4 * bits.size,
        sifted_bits=2 * bits.size,
        sample_bits=bits.size // 5,
        qber=0.01,
        qber_upper=0.02,
        reconciled_bits=2 * bits.size,
        leaked_bits=bits.size // 4,
        corrected_errors=None,
        simulated_seconds=0.5,
        channel_bytes_sent=0,
    )


class FakeSource:
    """Sessions of `size` seeded random bits; the pairs in `fail` abort; `corrupt` desynchronises."""

    def __init__(
        self,
        size: int = 1000,
        fail: frozenset[tuple[int, int]] = frozenset(),
        corrupt: bool = False,
    ) -> None:
        self.size, self.fail, self.corrupt = size, fail, corrupt
        self.calls: list[tuple[tuple[int, int], int]] = []
        self.lock = threading.Lock()

    def __call__(
        self, pair: tuple[int, int], index: int
    ) -> tuple[QkdSessionResult, QkdSessionResult]:
        with self.lock:
            self.calls.append((pair, index))
        if pair in self.fail:
            raise QkdAborted(f"QBER 25.0% on pair {pair}")
        bits = np.random.default_rng([*pair, index]).integers(0, 2, self.size, dtype=np.uint8)
        other = bits.copy()
        if self.corrupt:
            other[0] ^= 1
        return _result(Role.ALICE, bits), _result(Role.BOB, other)


def test_key_pool_take_order_exhaustion_and_metering() -> None:
    pool = KeyPool((2, 5))
    stream = np.random.default_rng(0).integers(0, 2, 300, dtype=np.uint8)
    pool.append(stream[:200])
    pool.append(stream[200:])
    assert pool.take(10) == bits_to_int(stream[:10])
    assert pool.take(1) == int(stream[10])
    assert (pool.produced_bits, pool.consumed_bits, pool.available_bits) == (300, 11, 289)
    with pytest.raises(
        KeyPoolExhausted, match=r"2–5 needs 290 bits but holds 289 \(300 produced, 11 consumed\)"
    ):
        pool.take(290)
    assert pool.available_bits == 289  # a failed take consumes nothing
    assert pool.take(289) == bits_to_int(stream[11:])
    with pytest.raises(ValueError):
        pool.take(0)
    with pytest.raises(ValueError):
        pool.append(np.array([0, 2], dtype=np.uint8))


def test_bits_to_int_is_lsb_first() -> None:
    assert bits_to_int(np.array([1, 0, 0, 0, 0, 0, 0, 0, 1], dtype=np.uint8)) == 1 + 256
    assert bits_to_int(np.array([0, 1], dtype=np.uint8)) == 2


def test_pools_satisfy_the_key_supply_protocol_with_unordered_pairs() -> None:
    pools = PairwiseKeyPools([1, 2, 3], FakeSource())
    supply: PairwiseKeySupply = pools
    pools.refill(min_bits=500)
    assert pools.meter().sessions == 3
    x = supply.take(3, 1, 128)
    y = supply.take(1, 3, 128)
    low = pools.endpoint_pool(1, 3)
    assert x != y and x < 2**128  # consecutive takes get fresh bits from one stream
    stream = np.random.default_rng([1, 3, 0]).integers(0, 2, 1000, dtype=np.uint8)
    assert x == bits_to_int(stream[:128]) and y == bits_to_int(stream[128:256])
    assert supply.consumed_bits() == 256
    assert low.available_bits == pools.endpoint_pool(3, 1).available_bits == 1000 - 256
    with pytest.raises(ValueError, match="two different nodes"):
        pools.take(2, 2, 8)
    with pytest.raises(ValueError, match="roster"):
        pools.take(1, 9, 8)


def test_a_pair_without_a_pool_is_a_project_error() -> None:
    """Issue 10: a node outside the roster (or a node with itself) raised a bare ValueError."""
    pools = PairwiseKeyPools([1, 2, 3], FakeSource())
    for a, b in [(1, 9), (2, 2)]:
        with pytest.raises(UnknownKeyPair):
            pools.take(a, b, 8)
        with pytest.raises(UnknownKeyPair):
            pools.available_bits(a, b)
    with pytest.raises(UnknownKeyPair):
        SeededKeySupply(0).take(4, 4, 8)
    assert issubclass(UnknownKeyPair, QbflError) and issubclass(UnknownKeyPair, ValueError)


def test_exhaustion_names_the_pair_and_the_numbers() -> None:
    pools = PairwiseKeyPools([0, 1], FakeSource(size=100))
    pools.refill(min_bits=1)
    pools.take(0, 1, 60)
    with pytest.raises(
        KeyPoolExhausted,
        match=r"key pool 0–1 needs 64 bits but holds 40 \(100 produced, 60 consumed\)",
    ):
        pools.take(1, 0, 64)


def test_meter_sums_sessions_bits_and_simulated_time() -> None:
    pools = PairwiseKeyPools([1, 2, 3], FakeSource(size=1000))
    assert pools.refill((2, 1), min_bits=2500) == 3
    pools.take(1, 2, 700)
    m = pools.meter(pair_of(1, 2))
    assert (m.produced_bits, m.consumed_bits, m.available_bits) == (3000, 700, 2300)
    assert m.sessions == 3 and m.simulated_seconds == pytest.approx(1.5)
    assert pools.meter().produced_bits == 3000  # other pairs untouched
    assert pools.refill([(1, 3), (2, 3)], min_bits=10) == 2


def test_endpoints_that_disagree_are_detected() -> None:
    pools = PairwiseKeyPools([1, 2], FakeSource(corrupt=True))
    pools.refill(min_bits=10)
    with pytest.raises(KeyMismatch):
        pools.take(1, 2, 8)


def test_refill_gives_up_after_repeated_aborts_with_fresh_seeds() -> None:
    source = FakeSource(fail=frozenset({(1, 2)}))
    pools = PairwiseKeyPools([1, 2, 3], source, max_aborts=3)
    with pytest.raises(
        QkdAborted, match=r"pair 1–2: 3 QKD sessions in a row aborted; last: QBER 25"
    ):
        pools.refill(min_bits=10)
    assert [i for p, i in source.calls if p == (1, 2)] == [0, 1, 2]  # each retry a new session
    assert pools.meter(pair_of(1, 2)).aborted_sessions == 3


def test_concurrent_takes_never_share_bits() -> None:
    pools = PairwiseKeyPools([1, 2], FakeSource(size=64 * 400))
    pools.refill(min_bits=1)
    taken: list[int] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(100):
            value = pools.take(1, 2, 64)
            with lock:
                taken.append(value)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stream = np.random.default_rng([1, 2, 0]).integers(0, 2, 64 * 400, dtype=np.uint8)
    chunks = [bits_to_int(stream[i : i + 64]) for i in range(0, stream.size, 64)]
    assert Counter(taken) == Counter(chunks)
    assert pools.consumed_bits() == 64 * 400


def test_background_refiller_driven_by_hand() -> None:
    pools = PairwiseKeyPools([1, 2, 3], FakeSource(size=1000))
    refiller = BackgroundRefiller(pools, low_water_bits=500, target_bits=2000, clock=lambda: 42.0)
    assert refiller.run_once() == 6  # every empty pool filled to 2000 bits (2 sessions each)
    assert refiller.last_pass_at == 42.0
    pools.take(1, 2, 1600)  # 400 left: below the low-water mark
    pools.take(1, 3, 1000)  # 1000 left: above it
    assert refiller.run_once() == 2
    assert pools.available_bits(1, 2) == 2400 and pools.available_bits(1, 3) == 1000


def test_background_refiller_thread_wakes_on_a_low_take() -> None:
    pools = PairwiseKeyPools([1, 2], FakeSource(size=1000))
    refiller = BackgroundRefiller(pools, low_water_bits=500, target_bits=1500, interval_s=None)
    refiller.start()
    try:
        assert refiller.wait_for_passes(1, timeout_s=2.0)
        assert pools.available_bits(1, 2) == 2000
        pools.take(1, 2, 1200)  # 800 left: above the low-water mark, no wake-up
        assert not refiller.wait_for_passes(2, timeout_s=0.05)
        pools.take(1, 2, 400)  # 400 left: the take wakes the refiller
        assert refiller.wait_for_passes(2, timeout_s=2.0)
        assert pools.available_bits(1, 2) == 2400 and refiller.sessions == 4  # 400 + 2 sessions
        refiller.wake()  # an explicit wake runs a pass that finds nothing to do
        assert refiller.wait_for_passes(3, timeout_s=2.0)
        assert refiller.sessions == 4
    finally:
        refiller.stop()
    assert refiller.errors == []


def test_background_refiller_records_failures_and_keeps_serving() -> None:
    pools = PairwiseKeyPools([1, 2, 3], FakeSource(fail=frozenset({(1, 2)})), max_aborts=2)
    refiller = BackgroundRefiller(pools, low_water_bits=100, target_bits=100, interval_s=0.01)
    refiller.start()
    try:
        assert refiller.wait_for_passes(2, timeout_s=2.0)
    finally:
        refiller.stop()
    assert pools.available_bits(1, 3) >= 100 and pools.available_bits(2, 3) >= 100
    assert pools.available_bits(1, 2) == 0
    assert refiller.errors and "pair 1–2" in str(refiller.errors[0])


def test_pools_refilled_by_real_bb84_sessions() -> None:
    source = BB84SessionSource(
        BB84Config(n_qubits=20_000, timeout_s=5.0), seed=9, channel_error=0.02
    )
    pools = PairwiseKeyPools([0, 1, 2], source)
    pools.refill((0, 2), min_bits=5_000)
    assert pools.available_bits(0, 2) >= 5_000
    a = pools.endpoint_pool(0, 2)
    assert a.produced_bits == pools.endpoint_pool(2, 0).produced_bits
    key = pools.take(2, 0, 256)
    assert 0 < key < 2**256
    tapped = BB84SessionSource(
        BB84Config(n_qubits=20_000, timeout_s=5.0), seed=9, eavesdropped=[(1, 0)]
    )
    with pytest.raises(QkdAborted, match="exceeds the 11% threshold"):
        PairwiseKeyPools([0, 1], tapped, max_aborts=1).refill(min_bits=1)


def test_config_errors() -> None:
    with pytest.raises(ValueError):
        PairwiseKeyPools([1], FakeSource())
    pools = PairwiseKeyPools([1, 2], FakeSource())
    with pytest.raises(ValueError):
        BackgroundRefiller(pools, low_water_bits=10, target_bits=5)
    with pytest.raises(ValueError):
        BackgroundRefiller(pools, low_water_bits=1, target_bits=5, interval_s=0)
    with pytest.raises(ValueError):
        pools.refill(min_bits=-1)
