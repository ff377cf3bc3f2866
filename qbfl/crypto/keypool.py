"""Per-pair one-time key pools filled by simulated BB84 sessions, metered, with a background refiller."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from qbfl.crypto.bb84 import BB84Config, QkdSessionResult, run_bb84_pair
from qbfl.crypto.keysupply import UnknownKeyPair
from qbfl.crypto.qkd import Bits
from qbfl.errors import KeyPoolExhausted, QbflError, QkdAborted

Pair = tuple[int, int]


class KeyMismatch(QbflError):
    """The two endpoints of a pair hold different key bits: the pool must not be used."""


def pair_of(a: int, b: int) -> Pair:
    """The unordered pair {a, b} as (low, high); a node has no key with itself."""
    if a == b:
        raise UnknownKeyPair(f"a key pair needs two different nodes, got {a} twice")
    return (a, b) if a < b else (b, a)


def bits_to_int(bits: Bits) -> int:
    """Bit i of the result is bits[i] (LSB first, the PairwiseKeySupply convention)."""
    return int.from_bytes(np.packbits(bits, bitorder="little").tobytes(), "little")


@dataclass(frozen=True)
class KeyMeter:
    """Key accounting for one pair or summed over all pairs."""

    produced_bits: int
    consumed_bits: int
    available_bits: int
    sessions: int
    aborted_sessions: int
    simulated_seconds: float  # qubit transmission time at the links' key_rate


class KeyPool:
    """One endpoint's key bits for one pair: consumed once, in the order they were produced."""

    def __init__(self, pair: Pair) -> None:
        self.pair = pair
        self._bits = np.zeros(0, dtype=np.uint8)
        self._start = 0
        self._produced = 0
        self._lock = threading.Lock()

    @property
    def available_bits(self) -> int:
        return self._bits.size - self._start

    @property
    def produced_bits(self) -> int:
        return self._produced

    @property
    def consumed_bits(self) -> int:
        return self._produced - self.available_bits

    def append(self, bits: Bits) -> None:
        bits = np.asarray(bits, dtype=np.uint8)
        if bits.ndim != 1 or (bits.size and int(bits.max()) > 1):
            raise ValueError("key bits must be a 1-D array of 0/1 values")
        with self._lock:
            self._bits = np.concatenate([self._bits[self._start :], bits])
            self._start = 0
            self._produced += bits.size

    def take_bits(self, nbits: int) -> Bits:
        if nbits <= 0:
            raise ValueError(f"nbits must be positive, got {nbits}")
        with self._lock:
            if nbits > self.available_bits:
                a, b = self.pair
                raise KeyPoolExhausted(
                    f"key pool {a}–{b} needs {nbits} bits but holds {self.available_bits} "
                    f"({self._produced} produced, {self.consumed_bits} consumed); "
                    "refill it with more QKD sessions or lower the key demand"
                )
            out = self._bits[self._start : self._start + nbits].copy()
            self._start += nbits
            return out

    def take(self, nbits: int) -> int:
        return bits_to_int(self.take_bits(nbits))


class SessionSource(Protocol):
    """Runs one QKD session for a pair; returns (low endpoint's result, high endpoint's result)."""

    def __call__(self, pair: Pair, index: int) -> tuple[QkdSessionResult, QkdSessionResult]: ...


class BB84SessionSource:
    """In-process BB84 sessions, seeded per (seed, pair, session index) so every run is reproducible."""

    def __init__(
        self,
        config: BB84Config,
        *,
        seed: int,
        channel_error: float = 0.01,
        eavesdropped: Iterable[Pair] = (),
    ) -> None:
        self.config, self.seed, self.channel_error = config, seed, channel_error
        self.eavesdropped = {pair_of(*p) for p in eavesdropped}

    def __call__(self, pair: Pair, index: int) -> tuple[QkdSessionResult, QkdSessionResult]:
        seq = np.random.SeedSequence(self.seed, spawn_key=(pair[0], pair[1], index))
        return run_bb84_pair(
            self.config,
            seed=seq,
            channel_error=self.channel_error,
            eavesdropper=pair in self.eavesdropped,
        )


class _PairState:
    def __init__(self, pair: Pair) -> None:
        self.low, self.high = KeyPool(pair), KeyPool(pair)
        self.lock = threading.Lock()  # serialises takes so both copies stay in step
        self.sessions = self.aborted = self.next_index = 0
        self.simulated_seconds = 0.0


class PairwiseKeyPools:
    """QKD key pools for every pair of `nodes` (a PairwiseKeySupply).

    Each pair keeps both endpoints' copies of its key; `take` consumes the same bits from both
    and checks they agree, so a simulation sees exactly what two real endpoints would.
    `pace(seconds)`, when given, is called with each session's simulated duration
    (n_qubits / BB84Config.key_rate) before its key is added: pass an (injected) sleep to make
    keys arrive at the configured key rate instead of as fast as the simulation runs.
    """

    def __init__(
        self,
        nodes: Iterable[int],
        source: SessionSource,
        *,
        max_aborts: int = 3,
        pace: Callable[[float], object] | None = None,
    ) -> None:
        ids = sorted(set(nodes))
        if len(ids) < 2:
            raise ValueError("key pools need at least two nodes")
        if max_aborts < 1:
            raise ValueError(f"max_aborts must be >= 1, got {max_aborts}")
        self._pairs = {(a, b): _PairState((a, b)) for i, a in enumerate(ids) for b in ids[i + 1 :]}
        self._source, self._max_aborts, self._pace = source, max_aborts, pace
        self._listeners: list[Callable[[Pair], None]] = []

    @property
    def pairs(self) -> list[Pair]:
        return list(self._pairs)

    def _state(self, a: int, b: int) -> _PairState:
        pair = pair_of(a, b)
        state = self._pairs.get(pair)
        if state is None:
            raise UnknownKeyPair(f"no key pool for pair {pair}: both nodes must be in the roster")
        return state

    def endpoint_pool(self, node: int, peer: int) -> KeyPool:
        """The copy of the pair's key that `node` holds (what a real node would have)."""
        state = self._state(node, peer)
        return state.low if node < peer else state.high

    def take(self, a: int, b: int, nbits: int) -> int:
        state = self._state(a, b)
        with state.lock:
            mine = state.low.take_bits(nbits)  # KeyPoolExhausted names the pair and the numbers
            theirs = state.high.take_bits(nbits)
        if not np.array_equal(mine, theirs):
            raise KeyMismatch(f"endpoints of pair {pair_of(a, b)} drew different key bits")
        for listener in list(self._listeners):
            listener(pair_of(a, b))
        return bits_to_int(theirs)

    def consumed_bits(self) -> int:
        return sum(s.low.consumed_bits for s in self._pairs.values())

    def available_bits(self, a: int, b: int) -> int:
        return self._state(a, b).low.available_bits

    def meter(self, pair: Pair | None = None) -> KeyMeter:
        states = [self._state(*pair)] if pair is not None else list(self._pairs.values())
        return KeyMeter(
            produced_bits=sum(s.low.produced_bits for s in states),
            consumed_bits=sum(s.low.consumed_bits for s in states),
            available_bits=sum(s.low.available_bits for s in states),
            sessions=sum(s.sessions for s in states),
            aborted_sessions=sum(s.aborted for s in states),
            simulated_seconds=sum(s.simulated_seconds for s in states),
        )

    def add_listener(self, listener: Callable[[Pair], None]) -> None:
        """Call `listener(pair)` after every take (the background refiller's wake-up)."""
        self._listeners.append(listener)

    def refill(self, pairs: Pair | Iterable[Pair] | None = None, *, min_bits: int) -> int:
        """Run QKD sessions until each chosen pool (all when None) holds min_bits; returns sessions run.

        An aborted session adds nothing; `max_aborts` aborts in a row on one pair re-raise the
        last QkdAborted (an eavesdropped link stays down rather than looping forever).
        """
        if min_bits < 0:
            raise ValueError(f"min_bits must be >= 0, got {min_bits}")
        if pairs is None:
            chosen = self.pairs
        elif (
            isinstance(pairs, tuple) and len(pairs) == 2 and all(isinstance(x, int) for x in pairs)
        ):
            chosen = [pair_of(*pairs)]  # type: ignore[misc]
        else:
            chosen = [pair_of(*p) for p in pairs]  # type: ignore[misc]
        return sum(self._refill_pair(pair, min_bits) for pair in chosen)

    def _refill_pair(self, pair: Pair, min_bits: int) -> int:
        state = self._state(*pair)
        ran = aborts_in_a_row = 0
        while state.low.available_bits < min_bits:
            with state.lock:
                index = state.next_index
                state.next_index += 1  # concurrent refills never reuse a session's seed
            try:
                low, high = self._source(pair, index)
            except QkdAborted as exc:
                with state.lock:
                    state.aborted += 1
                aborts_in_a_row += 1
                if aborts_in_a_row >= self._max_aborts:
                    raise QkdAborted(
                        f"pair {pair[0]}–{pair[1]}: {aborts_in_a_row} QKD sessions in a row aborted; last: {exc}"
                    ) from exc
                continue
            aborts_in_a_row = 0
            ran += 1
            if self._pace is not None:
                self._pace(low.simulated_seconds)  # the key exists once the link has produced it
            with state.lock:
                state.sessions += 1
                state.low.append(low.key_array())
                state.high.append(high.key_array())
                state.simulated_seconds += low.simulated_seconds
        return ran


class BackgroundRefiller:
    """A thread that tops pools up to `target_bits` whenever one falls below `low_water_bits`.

    It wakes every `interval_s` (None: only when woken) and after every take. Time is injected:
    `interval_s` bounds an Event wait and `clock` (optional) stamps passes; the core never reads
    the wall clock itself. A failed refill (e.g. an eavesdropped link) is kept in `errors` and
    does not stop the thread; the other pairs keep being served.
    """

    def __init__(
        self,
        pools: PairwiseKeyPools,
        *,
        low_water_bits: int,
        target_bits: int,
        interval_s: float | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        if not 0 <= low_water_bits <= target_bits or target_bits <= 0:
            raise ValueError(
                f"need 0 <= low_water_bits ({low_water_bits}) <= target_bits ({target_bits}), target > 0"
            )
        if interval_s is not None and interval_s <= 0:
            raise ValueError(f"interval_s must be positive or None, got {interval_s}")
        self._pools, self.low_water_bits, self.target_bits = pools, low_water_bits, target_bits
        self._interval, self._clock = interval_s, clock
        self._wake, self._stop = threading.Event(), threading.Event()
        self._done = threading.Condition()
        self._thread: threading.Thread | None = None
        self.passes = 0
        self.sessions = 0
        self.last_pass_at: float | None = None
        self.errors: list[QkdAborted] = []
        pools.add_listener(self._on_take)

    def _on_take(self, pair: Pair) -> None:
        if self._pools.available_bits(*pair) < self.low_water_bits:
            self._wake.set()

    def wake(self) -> None:
        self._wake.set()

    def run_once(self) -> int:
        """Refill every pool below the low-water mark to the target; returns sessions run."""
        ran = 0
        for pair in self._pools.pairs:
            if self._pools.available_bits(*pair) < self.low_water_bits:
                try:
                    ran += self._pools.refill(pair, min_bits=self.target_bits)
                except QkdAborted as exc:
                    self.errors.append(exc)
        with self._done:
            self.passes += 1
            self.sessions += ran
            self.last_pass_at = self._clock() if self._clock else None
            self._done.notify_all()
        return ran

    def wait_for_passes(self, count: int, timeout_s: float) -> bool:
        """Block until `count` passes have completed in total (for tests and orderly shutdown)."""
        with self._done:
            return self._done.wait_for(lambda: self.passes >= count, timeout_s)

    def wait_until_stocked(self, timeout_s: float) -> bool:
        """Wake the thread and block until every pool holds at least `low_water_bits`.

        False after `timeout_s` (a link that keeps aborting never restocks: see `errors`).
        """
        self.wake()

        def stocked() -> bool:
            return all(
                self._pools.available_bits(*p) >= self.low_water_bits for p in self._pools.pairs
            )

        with self._done:
            return self._done.wait_for(stocked, timeout_s)

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("the refiller is already running")
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="qkd-refiller", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()  # before the pass: a take during the pass triggers another one
            self.run_once()
            self._wake.wait(self._interval)
