"""Simulated BB84 between two endpoints: qubits with noise or an eavesdropper, sifting, QBER, key."""

from __future__ import annotations

import queue
import struct
import threading
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

import blake3
import numpy as np

from qbfl.crypto.qkd import (
    Bits,
    ChannelClosed,
    ClassicalChannel,
    InMemoryDuplex,
    LinkMessage,
    LinkStep,
    cascade_answer,
    cascade_correct,
    expand_seed,
    expect,
    final_key_length,
    pack_bits,
    toeplitz_hash,
    unpack_bits,
)
from qbfl.errors import QkdAborted


class Role(Enum):
    ALICE = "alice"  # prepares qubits, answers parity queries
    BOB = "bob"  # measures qubits, drives error correction


# --- the quantum channel -------------------------------------------------------------------------


@dataclass(frozen=True)
class Photons:
    """Qubits in flight: each one's bit value and basis (0 = rectilinear, 1 = diagonal).

    `detected` (1: Bob's detector clicked) is None on a lossless channel; a lost photon yields no
    measurement, and sifting keeps only positions Bob detected with matching bases.
    """

    bits: Bits
    bases: Bits
    detected: Bits | None = None


def intercept_resend(photons: Photons, rng: np.random.Generator) -> Photons:
    """Eve measures every photon in a random basis and resends what she saw, in her basis:
    ~25 % errors on the sifted key."""
    eve_bases = rng.integers(0, 2, photons.bits.size, dtype=np.uint8)
    return Photons(measure(photons, eve_bases, rng), eve_bases, photons.detected)


def apply_channel(
    photons: Photons,
    rng: np.random.Generator,
    *,
    error_rate: float,
    loss: float = 0.0,
    eavesdropper: bool = False,
) -> Photons:
    """What arrives: Eve (if any) on the way, then bit flips with `error_rate`, photons lost with
    probability `loss`."""
    if not 0.0 <= error_rate <= 0.5 or not 0.0 <= loss < 1.0:
        raise ValueError(
            f"need error rate in [0, 0.5] and loss in [0, 1), got {error_rate}, {loss}"
        )
    if eavesdropper:
        photons = intercept_resend(photons, rng)
    flips = (rng.random(photons.bits.size) < error_rate).astype(np.uint8)
    detected = photons.detected
    if loss:
        kept = (rng.random(photons.bits.size) >= loss).astype(np.uint8)
        detected = kept if detected is None else detected & kept
    return Photons(photons.bits ^ flips, photons.bases, detected)


class QuantumChannel(Protocol):
    """One endpoint's view of the quantum channel: Alice transmits, Bob receives (DESIGN §6)."""

    def transmit(self, bits: Bits, bases: Bits) -> None: ...

    def receive(self, timeout_s: float = 30.0) -> Photons: ...

    def close(self) -> None: ...


class SimulatedQuantumChannel:
    """Alice → Bob qubits with a flip probability and an optional intercept-resend eavesdropper."""

    def __init__(self, *, error_rate: float, eavesdropper: bool, rng: np.random.Generator) -> None:
        if not 0.0 <= error_rate <= 0.5:
            raise ValueError(f"channel error rate must be in [0, 0.5], got {error_rate}")
        self.error_rate, self.eavesdropper, self._rng = error_rate, eavesdropper, rng
        self._in_flight: queue.Queue[Photons | None] = queue.Queue()

    def transmit(self, bits: Bits, bases: Bits) -> None:
        self._in_flight.put(
            apply_channel(
                Photons(bits, bases),
                self._rng,
                error_rate=self.error_rate,
                eavesdropper=self.eavesdropper,
            )
        )

    def receive(self, timeout_s: float = 30.0) -> Photons:
        try:
            photons = self._in_flight.get(timeout=timeout_s)
        except queue.Empty:
            raise ChannelClosed(f"no qubits arrived within {timeout_s} s") from None
        if photons is None:
            raise ChannelClosed("the sender closed the quantum channel")
        return photons

    def close(self) -> None:
        self._in_flight.put(None)


def measure(photons: Photons, bases: Bits, rng: np.random.Generator) -> Bits:
    """Measuring in the preparation basis reads the bit; the other basis gives a fair coin."""
    coins = rng.integers(0, 2, photons.bits.size, dtype=np.uint8)
    return np.where(bases == photons.bases, photons.bits, coins).astype(np.uint8)


# --- configuration and result --------------------------------------------------------------------


@dataclass(frozen=True)
class BB84Config:
    """Session settings; both endpoints must use the same values."""

    n_qubits: int = 1_000_000
    qber_threshold: float = 0.11  # Shor–Preskill limit for one-way post-processing
    sample_fraction: float = 0.1  # share of the sifted key disclosed to estimate the QBER
    cascade_passes: int = 4
    epsilon_pe: float = 1e-10  # failure probability of the QBER upper bound
    epsilon_pa: float = 1e-10  # distance from uniform of the final key (leftover hash lemma)
    verify_tag_bits: int = 64
    key_rate: float = 1e6  # simulated qubits per second: meters simulated time, not wall time
    timeout_s: float = 30.0

    def __post_init__(self) -> None:
        if self.n_qubits < 64:
            raise ValueError(f"n_qubits must be at least 64, got {self.n_qubits}")
        if not 0.0 < self.qber_threshold < 0.5:
            raise ValueError(f"qber_threshold must be in (0, 0.5), got {self.qber_threshold}")
        if not 0.0 < self.sample_fraction < 1.0:
            raise ValueError(f"sample_fraction must be in (0, 1), got {self.sample_fraction}")
        if self.cascade_passes < 1:
            raise ValueError(f"cascade_passes must be >= 1, got {self.cascade_passes}")
        for name in ("epsilon_pe", "epsilon_pa"):
            if not 0.0 < getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in (0, 1), got {getattr(self, name)}")
        if not 8 <= self.verify_tag_bits <= 256 or self.verify_tag_bits % 8:
            raise ValueError(
                f"verify_tag_bits must be a multiple of 8 in [8, 256], got {self.verify_tag_bits}"
            )
        if self.key_rate <= 0 or self.timeout_s <= 0:
            raise ValueError("key_rate and timeout_s must be positive")


@dataclass(frozen=True)
class QkdSessionResult:
    """One endpoint's outcome: the final secret key (packed, MSB first) and the session's accounting."""

    role: Role
    key: bytes
    key_bits: int
    n_qubits: int
    sifted_bits: int
    sample_bits: int
    qber: float  # measured on the disclosed sample
    qber_upper: float  # + Hoeffding term, used for privacy amplification
    reconciled_bits: int  # key length going into error correction
    leaked_bits: int  # parities disclosed by Cascade + the verification tag
    corrected_errors: int | None  # known to Bob only
    simulated_seconds: float  # n_qubits / key_rate
    channel_bytes_sent: int

    def key_array(self) -> Bits:
        return unpack_bits(self.key, self.key_bits)


# --- one session, per endpoint ---------------------------------------------------------------------


class QberTooHigh(QkdAborted):
    """The sampled QBER exceeds the threshold: too much noise, or an eavesdropper."""

    def __init__(self, qber: float, sample_bits: int, threshold: float) -> None:
        super().__init__(
            f"QBER {qber:.1%} on {sample_bits} sampled bits exceeds the {threshold:.0%} "
            "threshold: the link is too noisy or eavesdropped; no key was kept"
        )
        self.qber, self.sample_bits, self.threshold = qber, sample_bits, threshold


def _estimate_qber(mine: Bits, theirs: Bits, config: BB84Config) -> float:
    if mine.size == 0:
        raise QkdAborted("no sifted bits left to sample: raise n_qubits")
    qber = float(np.count_nonzero(mine != theirs)) / mine.size
    if qber > config.qber_threshold:
        raise QberTooHigh(qber, mine.size, config.qber_threshold)
    return qber


def _finish(
    role: Role,
    key: Bits,
    config: BB84Config,
    channel: ClassicalChannel,
    *,
    sifted: int,
    sample: int,
    qber: float,
    leaked_ec: int,
    flipped: int | None,
    pa_seed: bytes,
) -> QkdSessionResult:
    leaked = leaked_ec + config.verify_tag_bits
    ell, q_upper = final_key_length(
        n=key.size,
        sample=sample,
        qber=qber,
        leaked=leaked,
        epsilon_pe=config.epsilon_pe,
        epsilon_pa=config.epsilon_pa,
    )
    if ell == 0:
        raise QkdAborted(
            f"no secret key left: {key.size} reconciled bits, QBER bound {q_upper:.1%}, "
            f"{leaked} bits leaked; raise n_qubits"
        )
    final = toeplitz_hash(key, expand_seed(pa_seed, key.size + ell - 1), ell)
    return QkdSessionResult(
        role=role,
        key=pack_bits(final),
        key_bits=ell,
        n_qubits=config.n_qubits,
        sifted_bits=sifted,
        sample_bits=sample,
        qber=qber,
        qber_upper=q_upper,
        reconciled_bits=key.size,
        leaked_bits=leaked,
        corrected_errors=flipped,
        simulated_seconds=config.n_qubits / config.key_rate,
        channel_bytes_sent=int(getattr(channel, "bytes_sent", 0)),
    )


def _tag(salt: bytes, key: Bits, nbits: int) -> bytes:
    return blake3.blake3(salt + pack_bits(key)).digest(length=nbits // 8)


def run_alice(
    channel: ClassicalChannel,
    quantum: QuantumChannel,
    config: BB84Config,
    rng: np.random.Generator,
) -> QkdSessionResult:
    """Alice's endpoint: prepare, sift, sample, answer Cascade, check the tag, choose the PA seed."""
    n = config.n_qubits
    bits = rng.integers(0, 2, n, dtype=np.uint8)
    bases = rng.integers(0, 2, n, dtype=np.uint8)
    quantum.transmit(bits, bases)
    channel.send(LinkMessage(LinkStep.BASES, pack_bits(bases)))
    answer = expect(channel, LinkStep.BASES)
    width = (n + 7) // 8
    keep = bases == unpack_bits(answer[:width], n)
    if len(answer) > width:  # Bob also says which photons he detected (a lossy channel)
        keep &= unpack_bits(answer[width:], n) == 1
    sifted = bits[keep]
    # QBER estimate on a random disclosed sample, then drop it from the key
    in_sample = (rng.random(sifted.size) < config.sample_fraction).astype(np.uint8)
    sample = sifted[in_sample == 1]
    channel.send(LinkMessage(LinkStep.SAMPLE, pack_bits(in_sample) + pack_bits(sample)))
    bob_sample = unpack_bits(expect(channel, LinkStep.SAMPLE), sample.size)
    qber = _estimate_qber(sample, bob_sample, config)
    key = sifted[in_sample == 0]
    cascade_seed = int(rng.integers(0, 2**63))
    channel.send(LinkMessage(LinkStep.CASCADE_SEED, struct.pack("<Q", cascade_seed)))
    leaked = cascade_answer(channel, key, qber, cascade_seed, config.cascade_passes)
    salt = rng.bytes(16)
    channel.send(LinkMessage(LinkStep.VERIFY, salt + _tag(salt, key, config.verify_tag_bits)))
    if expect(channel, LinkStep.VERDICT) != b"\x01":
        raise QkdAborted("keys differ after Cascade (verification hash mismatch); no key was kept")
    pa_seed = rng.bytes(32)
    channel.send(LinkMessage(LinkStep.PA_SEED, pa_seed))
    return _finish(
        Role.ALICE,
        key,
        config,
        channel,
        sifted=sifted.size,
        sample=sample.size,
        qber=qber,
        leaked_ec=leaked,
        flipped=None,
        pa_seed=pa_seed,
    )


def run_bob(
    channel: ClassicalChannel,
    quantum: QuantumChannel,
    config: BB84Config,
    rng: np.random.Generator,
) -> QkdSessionResult:
    """Bob's endpoint: measure, sift, sample, run Cascade, check the tag, apply the PA seed."""
    n = config.n_qubits
    bases = rng.integers(0, 2, n, dtype=np.uint8)
    photons = quantum.receive(config.timeout_s)
    bits = measure(photons, bases, rng)
    alice_bases = unpack_bits(expect(channel, LinkStep.BASES), n)
    keep = bases == alice_bases
    if photons.detected is None:
        channel.send(LinkMessage(LinkStep.BASES, pack_bits(bases)))
    else:
        keep &= photons.detected == 1
        channel.send(LinkMessage(LinkStep.BASES, pack_bits(bases) + pack_bits(photons.detected)))
    sifted = bits[keep]
    payload = expect(channel, LinkStep.SAMPLE)
    mask_bytes = (sifted.size + 7) // 8
    in_sample = unpack_bits(payload[:mask_bytes], sifted.size)
    sample = sifted[in_sample == 1]
    alice_sample = unpack_bits(payload[mask_bytes:], sample.size)
    channel.send(LinkMessage(LinkStep.SAMPLE, pack_bits(sample)))
    qber = _estimate_qber(sample, alice_sample, config)
    (cascade_seed,) = struct.unpack("<Q", expect(channel, LinkStep.CASCADE_SEED))
    key, leaked, flipped = cascade_correct(
        channel, sifted[in_sample == 0], qber, cascade_seed, config.cascade_passes
    )
    verify = expect(channel, LinkStep.VERIFY)
    agree = verify[16:] == _tag(verify[:16], key, config.verify_tag_bits)
    channel.send(LinkMessage(LinkStep.VERDICT, b"\x01" if agree else b"\x00"))
    if not agree:
        raise QkdAborted("keys differ after Cascade (verification hash mismatch); no key was kept")
    pa_seed = expect(channel, LinkStep.PA_SEED)
    return _finish(
        Role.BOB,
        key,
        config,
        channel,
        sifted=sifted.size,
        sample=sample.size,
        qber=qber,
        leaked_ec=leaked,
        flipped=flipped,
        pa_seed=pa_seed,
    )


def run_bb84_pair(
    config: BB84Config,
    *,
    seed: int | np.random.SeedSequence,
    channel_error: float = 0.01,
    eavesdropper: bool = False,
) -> tuple[QkdSessionResult, QkdSessionResult]:
    """Run both endpoints in-process (Bob on a thread) over an InMemoryDuplex; (alice, bob) results.

    Alice, Bob and the quantum channel each get their own generator spawned from `seed`.
    Whichever side fails closes the channel so the other stops at once; the first failure is raised.
    """
    root = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
    a_seq, b_seq, q_seq = root.spawn(3)
    duplex = InMemoryDuplex(config.timeout_s)
    quantum = SimulatedQuantumChannel(
        error_rate=channel_error, eavesdropper=eavesdropper, rng=np.random.default_rng(q_seq)
    )
    outcome: dict[Role, QkdSessionResult | BaseException] = {}

    def side(role: Role) -> None:
        run = run_alice if role is Role.ALICE else run_bob
        endpoint = duplex.alice if role is Role.ALICE else duplex.bob
        rng = np.random.default_rng(a_seq if role is Role.ALICE else b_seq)
        try:
            outcome[role] = run(endpoint, quantum, config, rng)
        except BaseException as exc:  # recorded and re-raised below, after the peer stops
            outcome[role] = exc
            duplex.close()
            quantum.close()

    bob = threading.Thread(target=side, args=(Role.BOB,), name="bb84-bob", daemon=True)
    bob.start()
    side(Role.ALICE)
    bob.join()
    failures = [r for r in outcome.values() if isinstance(r, BaseException)]
    if failures:
        # prefer the cause (e.g. QBER too high) over the peer's "channel closed"
        raise next((f for f in failures if not isinstance(f, ChannelClosed)), failures[0])
    alice, bob_result = outcome[Role.ALICE], outcome[Role.BOB]
    assert isinstance(alice, QkdSessionResult) and isinstance(bob_result, QkdSessionResult)
    return alice, bob_result
