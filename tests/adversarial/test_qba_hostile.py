"""Issue 10, QBA half: a hostile peer on the wire (forgery by key reuse, malformed and invented operations,
decode-time memory) and the simulation and reading errors found with it. Inputs as the issue gives them."""

from __future__ import annotations

import copy
import random
import struct
import tracemalloc
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
from qba_fixtures import SEARCH_PARAMS, Harness, full_polys, search_polys

from qbfl.consensus.qba import (
    QBA_DOC_MAX_BYTES,
    QBA_MAX_PATH,
    Accepted,
    EquivocatingLeader,
    ForwardChoice,
    Forwarded,
    HonestAdversary,
    InvalidQbaMessage,
    KeysRevealed,
    QbaMessage,
    QbaMode,
    QbaParticipant,
    SignChoice,
    SignedValue,
    TamperingRelay,
    TripleId,
    detectable_qds_operations,
    run_qba,
    verifier_operations,
)
from qbfl.consensus.qba.search import ScriptedAdversary
from qbfl.consensus.qbawire import decode_qba_message, encode_qba_message
from qbfl.consensus.wire import QbaEnvelope
from qbfl.crypto import qds
from qbfl.crypto.bb84 import QkdSessionResult, Role
from qbfl.crypto.gf2 import PolynomialSource
from qbfl.crypto.keypool import PairwiseKeyPools
from qbfl.crypto.keysupply import SeededKeySupply
from qbfl.crypto.qkd import pack_bits
from qbfl.errors import QbflError
from qbfl.ledger.encoding import EncodingError

COMMITTEE = [0, 1, 2, 3, 4]


# ------------------------------------------------------------------------------- finding 1
@pytest.mark.parametrize("batch", [False, True], ids=["unbatched", "batched"])
def test_finding_1_a_bob_cannot_sign_again_with_keys_charlie_revealed(batch: bool) -> None:
    """Committee 0-4, detectable, honest leader 0, member 1 faulty. As Bob, 1 forwards junk, keeps
    each KeysRevealed, signs b"forged" with K = own ⊕ revealed and sends Forwarded + Accepted again.
    Before the fix members 2, 3, 4 recorded the forgery and output ⊥ and 1 was never excluded."""
    h = Harness(COMMITTEE, f=2, batch=batch)
    revealed: dict[TripleId, KeysRevealed] = {}

    def junk_from_bob_1(msg: QbaMessage) -> QbaMessage:
        if isinstance(msg, Forwarded) and msg.sender == 1:
            return replace(msg, doc=b"junk")  # the leader's signature goes along: Charlie rejects
        if isinstance(msg, KeysRevealed) and msg.recipient == 1:
            revealed[msg.triple] = msg
        return msg

    h.deliver(h.members[0].start(b"v"), junk_from_bob_1)
    assert sorted(t.charlie for t in revealed) == [2, 3, 4]
    forged: list[QbaMessage] = []
    for t, rev in revealed.items():
        own = h.dealer.keys_for(t).bob
        keys = qds.SignerKeys(own.x ^ rev.x, own.y ^ rev.y)
        sig = qds.sign(b"forged", keys, search_polys().take(), SEARCH_PARAMS).sig
        forged += [
            Forwarded(t, 1, t.charlie, b"forged", sig, own.x, own.y),
            Accepted(t, 1, t.charlie),
        ]
    h.deliver(forged)
    h.end_round(1)
    for m in (2, 3, 4):
        assert b"forged" not in h.members[m].recorded.values()
        assert h.members[m].output() == b"v"
        # an honest Bob forwards once per operation: a different second forward proves 1 faulty
        assert 1 in h.members[m].excluded


def test_finding_1_through_the_adversary_hook() -> None:
    """The same attack as decisions of the hook (`reforge`), as the random search draws them."""
    script: dict[Any, Any] = {}
    for c in (2, 3, 4):
        t = TripleId((0,), 1, c)
        script[("forward", 1, t)] = ForwardChoice(value=b"junk")
        script[("reforge", 1, t)] = b"forged"
    for batch in (False, True):
        out = run_qba(
            committee=COMMITTEE,
            leader_value=b"v",
            f=2,
            keys=SeededKeySupply(0),
            polys=search_polys(),
            params=SEARCH_PARAMS,
            adversary=ScriptedAdversary(script),
            faulty=[1],
            batch=batch,
        )
        assert out.outputs == {0: b"v", 2: b"v", 3: b"v", 4: b"v"}
        assert out.excluded is not None and all(out.excluded[m] == {1} for m in (2, 3, 4))
        assert sum("re-forwards" in d for d in out.deviations) == 3


def test_an_identical_repeat_is_ignored_without_blame() -> None:
    """A network may duplicate a message; only a *different* second forward proves Bob faulty."""
    h = Harness(COMMITTEE, f=2)
    h.deliver(h.members[0].start(b"v"))
    before = {m: (p.recorded, set(p.excluded)) for m, p in h.members.items()}
    h.deliver([copy.copy(m) for m in list(h.sent)])  # every message of the round, once more
    h.end_round(1)
    assert {m: (p.recorded, set(p.excluded)) for m, p in h.members.items()} == before
    assert all(p.ignored > 0 for m, p in h.members.items() if m != 0)
    assert {p.output() for p in h.members.values()} == {b"v"}


class _ReplayEverything(HonestAdversary):
    def replay(self, member: int, triple: TripleId, step: Any) -> bool:
        return True


@pytest.mark.parametrize("mode", list(QbaMode))
@pytest.mark.parametrize("faulty", [[0], [1, 3], [0, 2, 4]])
def test_replays_of_every_message_kind_change_nothing(mode: QbaMode, faulty: list[int]) -> None:
    kwargs: dict[Any, Any] = dict(
        mode=mode,
        committee=list(range(6)),
        leader_value=b"v",
        f=2,
        params=SEARCH_PARAMS,
        faulty=faulty,
    )
    plain = run_qba(keys=SeededKeySupply(3), polys=search_polys(), **kwargs)
    replayed = run_qba(
        keys=SeededKeySupply(3), polys=search_polys(), adversary=_ReplayEverything(), **kwargs
    )
    assert replayed.outputs == plain.outputs
    assert replayed.excluded == plain.excluded
    assert replayed.messages > plain.messages  # the copies were delivered (and ignored)
    assert {d.split(" at ")[-1] for d in replayed.deviations if "replays" in d} >= {
        "sign" if 0 in faulty else "forward",
        "round-end",
    }


# ------------------------------------------------------------------------------- finding 2
class _BreakingSigner(HonestAdversary):
    def sign(self, signer: int, triple: TripleId, honest: bytes | None) -> SignChoice | None:
        return None if honest is None else SignChoice(honest, valid=False)


@pytest.mark.parametrize("batch", [False, True], ids=["unbatched", "batched"])
def test_finding_2_a_broken_signature_is_broken_on_both_paths(batch: bool) -> None:
    out = run_qba(
        committee=[0, 1, 2, 3],
        leader_value=b"v",
        f=1,
        keys=SeededKeySupply(0),
        polys=search_polys(),
        params=SEARCH_PARAMS,
        adversary=_BreakingSigner(),
        faulty=[0],
        batch=batch,
    )
    assert out.outputs == {1: None, 2: None, 3: None}  # nothing verifies, nothing is recorded


# ------------------------------------------------------------------------------- finding 4
def _state(p: QbaParticipant) -> dict[str, Any]:
    """Everything a message could change in a member (its own key share source aside)."""
    skip = {"_dealer", "_polys", "_adversary", "_admission"}
    state = {k: copy.deepcopy(v) for k, v in vars(p).items() if k not in skip}
    state["known"] = dict(p._admission.known) if hasattr(p, "_admission") else None
    return state


def _held_back(h: Harness, kind: type, sender: int, recipient: int) -> QbaMessage:
    """Run round 1 while holding back the first `kind` message from `sender` to `recipient`."""
    held: list[QbaMessage] = []

    def hold(msg: QbaMessage) -> QbaMessage | None:
        if not held and type(msg) is kind and msg.sender == sender and msg.recipient == recipient:
            held.append(msg)
            return None
        return msg

    h.deliver(h.members[0].start(b"v"), hold)
    return held[0]


def test_finding_4_key_bits_beyond_2_pow_136_leave_bob_waiting() -> None:
    """n = 128: a KeysRevealed with x = 2^136 raised OverflowError after Bob's pending entry was gone."""
    h = Harness(COMMITTEE, f=2, params=qds.QdsParams(), polys=full_polys())
    genuine = _held_back(h, KeysRevealed, 2, 1)
    assert isinstance(genuine, KeysRevealed)
    for bad in (replace(genuine, x=1 << 136), replace(genuine, y=1 << 300)):
        before = _state(h.members[1])
        with pytest.raises(InvalidQbaMessage):
            h.members[1].on_message(bad)
        assert _state(h.members[1]) == before
    h.deliver([genuine])  # the operation still completes with the real key bits
    assert h.members[1].recorded[genuine.triple] == b"v"


def test_finding_4_forwarded_key_bits_out_of_range() -> None:
    h = Harness(COMMITTEE, f=2, params=qds.QdsParams(), polys=full_polys())
    genuine = _held_back(h, Forwarded, 1, 2)
    assert isinstance(genuine, Forwarded)
    for bad in (
        replace(genuine, x=1 << 136),
        replace(genuine, y=1 << 256),
        replace(genuine, sig=1 << 256),
    ):
        before = _state(h.members[2])
        with pytest.raises(InvalidQbaMessage):
            h.members[2].on_message(bad)
        assert _state(h.members[2]) == before
    h.deliver([genuine])
    assert h.members[2].recorded[genuine.triple] == b"v"


def _bad_messages() -> dict[str, object]:
    ok = TripleId((0,), 1, 2)
    return {
        "bob is charlie": SignedValue(TripleId((0,), 1, 1), 0, 1, b"v", 0),
        "charlie is the signer": SignedValue(TripleId((0,), 1, 0), 0, 1, b"v", 0),
        "path not from the leader": SignedValue(TripleId((2,), 1, 3), 2, 1, b"v", 0),
        "charlie outside": SignedValue(TripleId((0,), 1, 99), 0, 1, b"v", 0),
        "relay in detectable mode": SignedValue(TripleId((0, 2), 1, 3), 2, 1, b"v", 0),
        "repeated primary": SignedValue(TripleId((0, 0), 1, 3), 0, 1, b"v", 0),
        "sender is not the signer": SignedValue(ok, 3, 1, b"v", 0),
        "addressed to charlie": SignedValue(ok, 0, 2, b"v", 0),
        "reveal by bob": KeysRevealed(TripleId((0,), 2, 1), 2, 1, 0, 0),
        "negative sig": SignedValue(ok, 0, 1, b"v", -1),
        "sig wider than 2n": SignedValue(ok, 0, 1, b"v", 1 << 64),
        "doc not bytes": SignedValue(ok, 0, 1, "v", 0),  # type: ignore[arg-type]
        "doc over 64 KiB": SignedValue(ok, 0, 1, bytes(QBA_DOC_MAX_BYTES + 1), 0),
        "bool sig": SignedValue(ok, 0, 1, b"v", True),
        "not a message": b"\x51\x01",
    }


@pytest.mark.parametrize("name", list(_bad_messages()))
def test_finding_4_and_5_invalid_input_is_refused_before_any_state_change(name: str) -> None:
    """Member 1 of committee 0-4 (detectable) gets one bad message after a normal round-1 start."""
    h = Harness(COMMITTEE, f=2)
    _held_back(h, Accepted, 1, 2)  # leaves work in flight: pending entries on both sides
    bits = h.keys.consumed_bits()
    before = _state(h.members[1])
    with pytest.raises(InvalidQbaMessage):
        h.members[1].on_message(_bad_messages()[name])  # type: ignore[arg-type]
    assert _state(h.members[1]) == before
    assert h.keys.consumed_bits() == bits


def _stocked_pools(nodes: list[int], bits: int) -> PairwiseKeyPools:
    """QKD pools holding `bits` seeded key bits per pair (one stand-in session each, no BB84 run)."""

    def session(pair: tuple[int, int], index: int) -> tuple[QkdSessionResult, QkdSessionResult]:
        key = np.random.default_rng([*pair, index]).integers(0, 2, bits, dtype=np.uint8)
        result = QkdSessionResult(
            role=Role.ALICE,
            key=pack_bits(key),
            key_bits=bits,
            n_qubits=4 * bits,
            sifted_bits=2 * bits,
            sample_bits=bits // 5,
            qber=0.01,
            qber_upper=0.02,
            reconciled_bits=2 * bits,
            leaked_bits=bits // 4,
            corrected_errors=None,
            simulated_seconds=0.0,
            channel_bytes_sent=0,
        )
        return result, replace(result, role=Role.BOB)

    pools = PairwiseKeyPools(nodes, session)
    pools.refill(min_bits=bits)
    return pools


def test_finding_4_a_charlie_outside_the_roster_never_reaches_the_qkd_pools() -> None:
    """With real pools, keypool.py raised ValueError for the pair (leader, 99) outside the roster."""
    pools = _stocked_pools(COMMITTEE, 4096)
    h = Harness(COMMITTEE, f=2, keys=pools)
    with pytest.raises(InvalidQbaMessage):
        h.members[1].on_message(SignedValue(TripleId((0,), 1, 99), 0, 1, b"v", 0))
    assert pools.consumed_bits() == 0
    assert h.run(b"v", rounds=1) == dict.fromkeys(COMMITTEE, b"v")  # the pools still serve QBA


# ------------------------------------------------------------------------------- finding 5
def test_finding_5_invented_operations_draw_no_keys_and_send_nothing() -> None:
    """20 000 SignedValues from member 2 for invented operations (2 signs as if it led, with Charlies
    outside the committee): 15.4 Mbit of key, 20 000 Forwarded to non-members and +32 MiB before."""
    h = Harness(COMMITTEE, f=2)
    bob = h.members[1]
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        refused = forwarded = 0
        for i in range(20_000):
            msg = SignedValue(TripleId((2,), 1, 1000 + i), 2, 1, b"x" * 8, i)
            try:
                forwarded += len(bob.on_message(msg))
            except InvalidQbaMessage:
                refused += 1
        growth = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert (refused, forwarded, h.keys.consumed_bits()) == (20_000, 0, 0)
    assert growth < 64 << 10, growth


@pytest.mark.parametrize(
    ("mode", "n", "f"), [(QbaMode.DETECTABLE, 5, 2), (QbaMode.PAPER, 5, 2), (QbaMode.PAPER, 6, 2)]
)
def test_finding_5_a_peer_reaches_only_the_operations_of_the_session(
    mode: QbaMode, n: int, f: int
) -> None:
    """Every message a member holds state or draws keys for names an operation of this session in
    which it is Bob or Charlie: at most verifier_operations(N, f) (docs/qba.md, "Bounds"). An honest
    run reaches the bound exactly; flooding every well-formed id from every sender adds nothing."""
    committee = list(range(n))
    h = Harness(committee, f=f, mode=mode)
    rounds = f if mode is QbaMode.PAPER else 1
    h.run(b"v", rounds)
    bound = verifier_operations(n, f, paper=mode is QbaMode.PAPER)
    for p in h.members.values():
        assert len(p._admission.known) == (0 if p.me == 0 else bound)
    bits = h.keys.consumed_bits()
    flood: list[QbaMessage] = []
    for bob in committee:
        for charlie in committee:
            for signer in committee:
                if len({bob, charlie, signer}) == 3:
                    t = TripleId((signer,), bob, charlie)
                    flood.append(SignedValue(t, signer, bob, b"w", 1))
    refused = 0
    for msg in flood:
        try:
            assert h.members[msg.recipient].on_message(msg) == []
        except InvalidQbaMessage:
            refused += 1
    assert refused == len(flood) - detectable_qds_operations(n)  # only the leader's ids exist
    assert h.keys.consumed_bits() == bits  # all of those were dealt (and used) already


# ------------------------------------------------------------------------------- finding 6
def _field(tag: int, value: bytes) -> bytes:
    return struct.pack(">BI", tag, len(value)) + value


def _record(type_tag: int, *fields: bytes) -> bytes:
    return struct.pack(">BBHB", 0x51, 1, type_tag, len(fields)) + b"".join(fields)


def _accepted_bytes(path: tuple[int, ...], bob: int, charlie: int) -> bytes:
    """An Accepted record built by hand (the encoder refuses such paths)."""
    seq = struct.pack(">I", len(path)) + b"".join(struct.pack(">Q", p) for p in path)
    ids = (bob, charlie, bob, charlie)
    fields = [_field(t, struct.pack(">Q", i)) for t, i in zip((2, 3, 4, 5), ids, strict=True)]
    return _record(27, _field(1, seq), *fields)


def _envelope(payload: bytes) -> bytes:
    u64 = struct.pack(">Q", 1)
    return _record(17, _field(1, u64), _field(2, u64), _field(3, payload))


def test_finding_6_long_paths_are_refused_at_decode() -> None:
    """Paths of 1 024 ids (8.3 KB envelopes) decoded; 4 000 distinct ones kept +188 MiB."""
    for i in range(200):
        path = tuple(range(i, i + 1024))
        with pytest.raises(EncodingError):
            QbaEnvelope.decode(_envelope(_accepted_bytes(path, 5000, 5001)))
    longest = tuple(range(QBA_MAX_PATH))
    assert decode_qba_message(_accepted_bytes(longest, 5000, 5001)).triple.path == longest
    with pytest.raises(EncodingError, match="path"):
        decode_qba_message(_accepted_bytes(tuple(range(QBA_MAX_PATH + 1)), 5000, 5001))


def test_finding_6_decoding_keeps_nothing_behind() -> None:
    """4 000 distinct envelopes with the longest allowed paths, decoded and dropped: no growth."""
    raws = [
        _envelope(_accepted_bytes(tuple(range(i, i + QBA_MAX_PATH)), 9000 + i, 20000 + i))
        for i in range(4000)
    ]
    QbaEnvelope.decode(raws[0])  # warm up imports and interned small objects
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        for raw in raws:
            env = QbaEnvelope.decode(raw)
            env.payload.triple.context()  # even a context built for a message dies with it
        del env
        growth = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert growth < 64 << 10, growth


def test_structurally_bad_messages_neither_encode_nor_decode() -> None:
    good = Accepted(TripleId((0,), 1, 2), 1, 2)
    assert decode_qba_message(encode_qba_message(good)) == good
    for path, bob, charlie in [((0,), 1, 1), ((0,), 0, 2), ((0, 0), 1, 2)]:
        with pytest.raises(EncodingError):
            decode_qba_message(_accepted_bytes(path, bob, charlie))
        with pytest.raises(EncodingError):
            encode_qba_message(Accepted(TripleId(path, bob, charlie), bob, charlie))
    with pytest.raises(EncodingError, match="must go"):  # Accepted goes Bob → Charlie
        encode_qba_message(Accepted(TripleId((0,), 1, 2), 2, 1))


# ------------------------------------------------------------------------------ finding 12
def test_finding_12_an_honest_bob_whose_consistency_check_fails_aborts() -> None:
    """Paper mode N = 5, f = 2; member 2 relays b"evil" in round 2. App. A.2: the forwarder checks the
    relayed value against its own message for the path one depth earlier (v): it must neither
    forward nor announce it. Before the fix honest Bobs forwarded and announced b"evil"."""
    h = Harness(COMMITTEE, f=2, mode=QbaMode.PAPER, faulty=[2], adversary=TamperingRelay(b"evil"))
    outputs = h.run(b"v", rounds=2)
    honest = {0, 1, 3, 4}
    relays_of_evil = [
        m
        for m in h.sent
        if m.sender in honest
        and isinstance(m, (Forwarded, Accepted))
        and m.triple.round == 2
        and m.triple.path[-1] == 2
    ]
    assert relays_of_evil == []
    assert all(outputs[m] == b"v" for m in honest)


class _CountingPolys:
    def __init__(self, inner: PolynomialSource) -> None:
        self._inner = inner
        self.n = inner.n
        self.taken = 0

    def take(self) -> int:
        self.taken += 1
        return self._inner.take()


@pytest.mark.parametrize("batch", [False, True])
def test_finding_12_every_polynomial_drawn_is_counted(batch: bool) -> None:
    """A colluding Bob's valid forgery (faulty leader 0 and Bob 1) took a polynomial not in `signed`."""
    polys = _CountingPolys(search_polys())
    out = run_qba(
        committee=COMMITTEE,
        leader_value=b"v",
        f=2,
        keys=SeededKeySupply(0),
        polys=polys,
        params=SEARCH_PARAMS,
        adversary=TamperingRelay(b"evil"),
        faulty=[0, 1],
        batch=batch,
    )
    assert polys.taken == out.qds_operations == 12 + 3  # Bob 1 forges in his three operations


def test_finding_12_relay_rounds_change_honest_outputs_in_paper_mode() -> None:
    """Under the old reading (the verifier, too, dropped relays unlike its own message) an honest
    output always equalled the majority of its round-1 records. Over 64 seeded leader tables at
    N = 5, the relay round (f = 2) now moves some honest member off its round-1 result (f = 1)."""
    rng = random.Random(12)
    pairs = [(b, c) for b in range(1, 5) for c in range(1, 5) if b != c]
    changed = 0
    for _ in range(64):
        table = {p: rng.choice([b"0", b"1"]) for p in pairs}
        outs = []
        for f in (1, 2):
            outs.append(
                run_qba(
                    mode=QbaMode.PAPER,
                    committee=COMMITTEE,
                    leader_value=b"0",
                    f=f,
                    keys=SeededKeySupply(0),
                    polys=search_polys(),
                    params=SEARCH_PARAMS,
                    adversary=EquivocatingLeader.from_table(table),
                    faulty=[0],
                ).outputs
            )
        changed += sum(outs[0][m] != outs[1][m] for m in range(1, 5))
    assert changed > 0


def test_errors_are_project_errors() -> None:
    assert issubclass(InvalidQbaMessage, QbflError)
