"""Issue 10's QBA measurements (docs/qba.md §2 "Finding 12" and §6), runnable against any checkout.

    .venv/bin/python bench/qba_hostile.py                       # this tree
    PYTHONPATH=/path/to/old/tree .venv/bin/python bench/qba_hostile.py   # e.g. `git archive main`

Uses only interfaces that existed before issue 10, so the same script measures both. Sections
(`--only`): equivalence (finding 2: batched vs unbatched, RandomByzantine(p=1) as faulty leader,
N = 3…5, 300 seeds each), flood (finding 5: 20 000 SignedValues for invented operations),
decode (finding 6: 4 000 distinct envelopes, 1 024- and 32-id paths), relays (finding 12: all
4 096 leader tables at N = 5, f = 2 vs f = 1; ~1 min), speed (paper 9/4 in memory, CPU seconds).
"""

from __future__ import annotations

import argparse
import random
import struct
import time
import tracemalloc

from qbfl.consensus.qba import (
    QbaMode,
    QbaParticipant,
    RandomByzantine,
    SignedValue,
    TripleId,
    TripleKeyDealer,
    enumerate_leader_signings,
    run_qba,
)
from qbfl.consensus.wire import QbaEnvelope
from qbfl.crypto import gf2
from qbfl.crypto.keysupply import SeededKeySupply
from qbfl.crypto.qds import QdsParams

SMALL = QdsParams(n=32)


def _polys(n: int, count: int = 16) -> gf2.CyclicPolynomialSource:
    return gf2.CyclicPolynomialSource(
        [gf2.random_irreducible(n, random.Random(s)) for s in range(count)]
    )


def equivalence() -> None:
    differ = total = 0
    for n in (3, 4, 5):
        for seed in range(300):
            outs = [
                run_qba(
                    committee=list(range(n)),
                    leader_value=b"0",
                    f=(n - 1) // 2,
                    keys=SeededKeySupply(seed),
                    polys=_polys(32),
                    params=SMALL,
                    adversary=RandomByzantine(seed, p=1.0),
                    faulty=[0],
                    batch=batch,
                ).outputs
                for batch in (True, False)
            ]
            differ += outs[0] != outs[1]
            total += 1
    print(f"finding 2: batched and unbatched outputs differ in {differ} of {total} runs")


def flood() -> None:
    keys = SeededKeySupply(0)
    bob = QbaParticipant(
        me=1,
        committee=[0, 1, 2, 3, 4],
        f=2,
        dealer=TripleKeyDealer(keys, QdsParams()),
        polys=_polys(128, 1),
    )
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    start = time.process_time()
    refused = forwarded = 0
    for i in range(20_000):
        try:
            msg = SignedValue(TripleId((2,), 1, 1000 + i), 2, 1, b"x" * 8, i)
            forwarded += len(bob.on_message(msg))
        except Exception:  # noqa: BLE001 - whatever the tree under test raises counts as a refusal
            refused += 1
    cpu = time.process_time() - start
    growth = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    print(
        f"finding 5: 20 000 invented operations: refused {refused}, forwarded {forwarded}, "
        f"key bits {keys.consumed_bits()}, +{growth / 2**20:.2f} MiB, {cpu:.2f} s CPU"
    )


def _field(tag: int, value: bytes) -> bytes:
    return struct.pack(">BI", tag, len(value)) + value


def _record(type_tag: int, *fields: bytes) -> bytes:
    return struct.pack(">BBHB", 0x51, 1, type_tag, len(fields)) + b"".join(fields)


def _envelope(path: tuple[int, ...], bob: int, charlie: int) -> bytes:
    seq = struct.pack(">I", len(path)) + b"".join(struct.pack(">Q", p) for p in path)
    ids = [
        _field(t, struct.pack(">Q", i))
        for t, i in zip((2, 3, 4, 5), (bob, charlie) * 2, strict=True)
    ]
    one = struct.pack(">Q", 1)
    return _record(17, _field(1, one), _field(2, one), _field(3, _record(27, _field(1, seq), *ids)))


def decode() -> None:
    for length in (1024, 32):
        raws = [
            _envelope(tuple(range(i, i + length)), 90_000 + i, 200_000 + i) for i in range(4000)
        ]
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        ok = 0
        for raw in raws:
            try:
                QbaEnvelope.decode(raw)
                ok += 1
            except Exception:  # noqa: BLE001, S112 - a refusal is what is measured
                continue
        growth = tracemalloc.get_traced_memory()[0] - base
        tracemalloc.stop()
        print(
            f"finding 6: 4 000 envelopes of {len(raws[0])} bytes ({length}-id paths): "
            f"{ok} decoded, +{growth / 2**20:.2f} MiB kept after dropping them"
        )


def relays() -> None:
    committee = [0, 1, 2, 3, 4]
    runs = changed_runs = changed = splits = 0
    for _, adversary in enumerate_leader_signings(committee):
        outs = [
            run_qba(
                mode=QbaMode.PAPER,
                committee=committee,
                leader_value=b"0",
                f=f,
                keys=SeededKeySupply(0),
                polys=_polys(32),
                params=SMALL,
                adversary=adversary,
                faulty=[0],
            ).outputs
            for f in (1, 2)
        ]
        runs += 1
        moved = sum(outs[0][m] != outs[1][m] for m in committee[1:])
        changed += moved
        changed_runs += moved > 0
        splits += len({v for v in outs[1].values() if v is not None}) > 1
    print(
        f"finding 12: N = 5, f = 2, all {runs} leader tables: the relay round changed an honest "
        f"output in {changed_runs} runs ({changed} outputs); two honest values in {splits} runs"
    )


def speed() -> None:
    polys = _polys(128, 64)
    times = []
    for r in range(5):
        start = time.process_time()
        run_qba(
            mode=QbaMode.PAPER,
            committee=list(range(9)),
            leader_value=bytes(63),
            f=4,
            keys=SeededKeySupply(r),
            polys=polys,
        )
        times.append(time.process_time() - start)
    print(f"paper 9/4 in memory: {min(times):.3f} s CPU (min of 5), {sorted(times)[2]:.3f} median")


SECTIONS = {
    "equivalence": equivalence,
    "flood": flood,
    "decode": decode,
    "relays": relays,
    "speed": speed,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=sorted(SECTIONS), action="append")
    for name in parser.parse_args().only or list(SECTIONS):
        SECTIONS[name]()


if __name__ == "__main__":
    main()
