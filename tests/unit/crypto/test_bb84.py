"""BB84 links: honest links agree on a key, eavesdropped or noisy ones abort, post-processing is exact."""

from __future__ import annotations

import math
import threading

import numpy as np
import pytest

from qbfl.crypto.bb84 import (
    BB84Config,
    Photons,
    QberTooHigh,
    SimulatedQuantumChannel,
    measure,
    run_bb84_pair,
)
from qbfl.crypto.qkd import (
    ChannelClosed,
    InMemoryDuplex,
    LinkMessage,
    LinkStep,
    binary_entropy,
    cascade_answer,
    cascade_correct,
    expect,
    final_key_length,
    toeplitz_hash,
)
from qbfl.errors import QkdAborted

SMALL = BB84Config(n_qubits=40_000, timeout_s=5.0)


@pytest.mark.parametrize("error", [0.0, 0.01, 0.05])
def test_honest_link_yields_identical_keys(error: float) -> None:
    alice, bob = run_bb84_pair(SMALL, seed=11, channel_error=error)
    assert alice.key == bob.key and alice.key_bits == bob.key_bits > 0
    assert abs(alice.sifted_bits - SMALL.n_qubits / 2) < 5 * math.sqrt(SMALL.n_qubits)
    assert alice.qber == bob.qber and abs(alice.qber - error) < 0.02
    assert alice.leaked_bits == bob.leaked_bits  # both count every disclosed parity
    assert bob.corrected_errors is not None and alice.corrected_errors is None
    # the key length is the documented formula applied to the session's own numbers
    expected, _ = final_key_length(
        n=alice.reconciled_bits,
        sample=alice.sample_bits,
        qber=alice.qber,
        leaked=alice.leaked_bits,
        epsilon_pe=SMALL.epsilon_pe,
        epsilon_pa=SMALL.epsilon_pa,
    )
    assert alice.key_bits == expected
    assert alice.simulated_seconds == SMALL.n_qubits / SMALL.key_rate


def test_cascade_leak_is_near_the_shannon_limit() -> None:
    _, bob = run_bb84_pair(SMALL, seed=3, channel_error=0.03)
    ec_leak = bob.leaked_bits - SMALL.verify_tag_bits
    shannon = bob.reconciled_bits * binary_entropy(bob.qber)
    assert shannon < ec_leak < 1.4 * shannon
    assert abs(bob.corrected_errors - 0.03 * bob.reconciled_bits) < 0.01 * bob.reconciled_bits  # type: ignore[operator]


def test_sessions_are_reproducible_from_the_seed() -> None:
    a1, _ = run_bb84_pair(SMALL, seed=5, channel_error=0.02)
    a2, _ = run_bb84_pair(SMALL, seed=5, channel_error=0.02)
    a3, _ = run_bb84_pair(SMALL, seed=6, channel_error=0.02)
    assert a1 == a2
    assert a1.key != a3.key


def test_intercept_resend_drives_qber_to_a_quarter_and_aborts() -> None:
    with pytest.raises(QberTooHigh, match=r"QBER 2[2-8]\.\d% .* exceeds the 11% threshold") as err:
        run_bb84_pair(SMALL, seed=1, channel_error=0.0, eavesdropper=True)
    assert abs(err.value.qber - 0.25) < 0.03 and err.value.sample_bits > 1000


def test_eavesdropper_qber_is_measured_at_25_percent() -> None:
    rng = np.random.default_rng(0)
    n = 200_000
    bits, bases = rng.integers(0, 2, n, dtype=np.uint8), rng.integers(0, 2, n, dtype=np.uint8)
    channel = SimulatedQuantumChannel(error_rate=0.0, eavesdropper=True, rng=rng)
    channel.transmit(bits, bases)
    bob_bases = rng.integers(0, 2, n, dtype=np.uint8)
    got = measure(channel.receive(1.0), bob_bases, rng)
    sifted = bases == bob_bases
    assert abs(np.mean(got[sifted] != bits[sifted]) - 0.25) < 0.01


def test_noisy_link_above_threshold_aborts_and_threshold_is_configurable() -> None:
    with pytest.raises(QkdAborted, match="exceeds the 11% threshold"):
        run_bb84_pair(SMALL, seed=2, channel_error=0.15)
    strict = BB84Config(n_qubits=40_000, qber_threshold=0.02, timeout_s=5.0)
    with pytest.raises(QkdAborted, match="exceeds the 2% threshold"):
        run_bb84_pair(strict, seed=2, channel_error=0.04)


def test_too_few_qubits_leave_no_key() -> None:
    with pytest.raises(QkdAborted, match="no secret key left"):
        run_bb84_pair(BB84Config(n_qubits=2_000, timeout_s=5.0), seed=2, channel_error=0.05)


def test_residual_errors_are_caught_by_the_verification_hash() -> None:
    # one Cascade pass at 8 % leaves blocks with an even number of errors uncorrected
    weak = BB84Config(n_qubits=20_000, cascade_passes=1, timeout_s=5.0)
    with pytest.raises(QkdAborted, match="verification hash mismatch"):
        run_bb84_pair(weak, seed=4, channel_error=0.08)


def _run_cascade(
    x: np.ndarray, y: np.ndarray, qber: float, passes: int
) -> tuple[np.ndarray, int, int, int]:
    duplex = InMemoryDuplex(timeout_s=5.0)
    answered: list[int] = []
    alice = threading.Thread(
        target=lambda: answered.append(cascade_answer(duplex.alice, x, qber, 99, passes))
    )
    alice.start()
    z, leaked, flipped = cascade_correct(duplex.bob, y, qber, 99, passes)
    alice.join()
    return z, leaked, flipped, answered[0]


@pytest.mark.parametrize("seed", range(4))
def test_cascade_corrects_every_error(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1_000, 30_000))
    qber = float(rng.uniform(0.005, 0.08))
    x = rng.integers(0, 2, n, dtype=np.uint8)
    errors = (rng.random(n) < qber).astype(np.uint8)
    z, leaked, flipped, alice_leaked = _run_cascade(x, x ^ errors, qber, passes=4)
    assert np.array_equal(z, x)
    assert flipped == int(errors.sum()) and leaked == alice_leaked


def _naive_toeplitz(x: np.ndarray, s: np.ndarray, m: int) -> np.ndarray:
    n = x.size
    matrix = np.array([[s[i - j + n - 1] for j in range(n)] for i in range(m)], dtype=np.int64)
    return (matrix @ x.astype(np.int64) % 2).astype(np.uint8)


@pytest.mark.parametrize(("n", "m"), [(1, 1), (7, 3), (64, 64), (300, 211), (1000, 1)])
def test_toeplitz_hash_matches_the_matrix_product(n: int, m: int) -> None:
    rng = np.random.default_rng(n * 1000 + m)
    x = rng.integers(0, 2, n, dtype=np.uint8)
    s = rng.integers(0, 2, n + m - 1, dtype=np.uint8)
    assert np.array_equal(toeplitz_hash(x, s, m), _naive_toeplitz(x, s, m))
    with pytest.raises(ValueError, match="seed bits"):
        toeplitz_hash(x, s[:-1], m)


def test_toeplitz_hash_is_exact_at_full_size() -> None:
    # the FFT sums reach ~2^18 here; spot-check rows against direct dot products
    rng = np.random.default_rng(8)
    n, m = 450_000, 300_000
    x = rng.integers(0, 2, n, dtype=np.uint8)
    s = rng.integers(0, 2, n + m - 1, dtype=np.uint8)
    y = toeplitz_hash(x, s, m)
    for i in rng.integers(0, m, 5):
        row = s[i : i + n][::-1]  # T[i, j] = s[i - j + n - 1]
        assert y[i] == int(np.dot(row.astype(np.int64), x)) % 2


def test_final_key_length_formula() -> None:
    ell, q_upper = final_key_length(
        n=100_000, sample=10_000, qber=0.02, leaked=15_000, epsilon_pe=1e-10, epsilon_pa=1e-10
    )
    delta = math.sqrt(math.log(1e10) / 20_000)
    assert q_upper == pytest.approx(0.02 + delta)
    assert ell == math.floor(
        100_000 * (1 - binary_entropy(0.02 + delta)) - 15_000 - 2 * math.log2(1e10)
    )
    assert (
        final_key_length(
            n=1000, sample=10, qber=0.1, leaked=900, epsilon_pe=1e-10, epsilon_pa=1e-10
        )[0]
        == 0
    )


def test_channel_close_and_protocol_errors_abort() -> None:
    duplex = InMemoryDuplex(timeout_s=0.05)
    with pytest.raises(ChannelClosed, match="nothing for 0.05 s"):
        duplex.bob.recv()
    duplex.alice.send(LinkMessage(LinkStep.SAMPLE, b""))
    with pytest.raises(QkdAborted, match="expected BASES, peer sent SAMPLE"):
        expect(duplex.bob, LinkStep.BASES)
    duplex.close()
    with pytest.raises(ChannelClosed, match="closed"):
        duplex.bob.recv()


def test_measurement_in_the_wrong_basis_is_a_fair_coin() -> None:
    rng = np.random.default_rng(1)
    n = 100_000
    photons = Photons(np.zeros(n, dtype=np.uint8), np.zeros(n, dtype=np.uint8))
    assert measure(photons, np.zeros(n, dtype=np.uint8), rng).sum() == 0
    assert abs(measure(photons, np.ones(n, dtype=np.uint8), rng).mean() - 0.5) < 0.01


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n_qubits": 10},
        {"qber_threshold": 0.6},
        {"sample_fraction": 0.0},
        {"cascade_passes": 0},
        {"epsilon_pa": 0.0},
        {"verify_tag_bits": 12},
        {"key_rate": 0.0},
    ],
)
def test_config_is_validated(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        BB84Config(**kwargs)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="error rate"):
        SimulatedQuantumChannel(error_rate=0.7, eavesdropper=False, rng=np.random.default_rng(0))


def test_a_failing_sender_releases_the_receiver_at_once() -> None:
    # Alice fails before sending any qubit: Bob must not sit out his 30 s timeout
    channel = SimulatedQuantumChannel(
        error_rate=0.0, eavesdropper=False, rng=np.random.default_rng(0)
    )
    channel.close()
    with pytest.raises(ChannelClosed, match="closed the quantum channel"):
        channel.receive(timeout_s=30.0)
    with pytest.raises(ChannelClosed, match="no qubits arrived"):
        channel.receive(timeout_s=0.01)
