"""QBA in both modes: operation counts, honest runs, the DESIGN §6 counterexamples, named strategies."""

from __future__ import annotations

import pytest
from qba_fixtures import SEARCH_PARAMS, full_polys, search_polys

from qbfl.consensus.qba import (
    EquivocatingLeader,
    QbaMode,
    RandomByzantine,
    SignedValue,
    SilentAdversary,
    TamperingRelay,
    detectable_qds_operations,
    paper_qds_operations,
    run_qba,
)
from qbfl.consensus.qba.search import RecordingAdversary, ScriptedAdversary
from qbfl.crypto.keysupply import SeededKeySupply

# DESIGN §6, N = 4, f = 1: the leader signs 1 in (0; 2→3), (0; 3→1), (0; 3→2), 0 in the other three
COUNTEREXAMPLE_4 = {
    (1, 2): b"0",
    (1, 3): b"0",
    (2, 1): b"0",
    (2, 3): b"1",
    (3, 1): b"1",
    (3, 2): b"1",
}
# N = 5, f = 2 (docs/qba.md §2): 1 in (0; 2→4), (0; 3→2), (0; 3→4), (0; 4→2), (0; 4→3), 0 elsewhere.
# Round 1 leaves node 1 with six 0s, node 4 with four 1s, nodes 2 and 3 with a 3:3 tie (⊥); a Bob
# whose own message is ⊥ aborts every relay, so nothing reaches 1 or 4 that could change them.
COUNTEREXAMPLE_5 = {
    (b, c): (b"1" if (b, c) in {(2, 4), (3, 2), (3, 4), (4, 2), (4, 3)} else b"0")
    for b in range(1, 5)
    for c in range(1, 5)
    if b != c
}
# The split DESIGN §6 gives for N = 5 (1 in the six triples containing node 4) holds only when the
# verifier, too, drops relays that differ from its own message; with the appendix's forwarder-only
# consistency check the relays of 1-3 reach node 4 as Charlie and move it to 0 (finding 12).
REPAIRED_BY_RELAYS_5 = {
    (b, c): (b"1" if 4 in (b, c) else b"0") for b in range(1, 5) for c in range(1, 5) if b != c
}


def test_operation_count_formulas() -> None:
    assert paper_qds_operations(5, 2) == 36
    assert paper_qds_operations(9, 4) == 8792
    assert detectable_qds_operations(5) == 12
    assert detectable_qds_operations(9) == 56


@pytest.mark.parametrize(("n", "f"), [(3, 1), (4, 1), (5, 2), (6, 2), (7, 3)])
def test_paper_mode_honest_run_counts_and_agrees(n: int, f: int) -> None:
    keys = SeededKeySupply(n)
    out = run_qba(
        mode=QbaMode.PAPER,
        committee=list(range(n)),
        leader_value=b"v",
        f=f,
        keys=keys,
        polys=search_polys(),
        params=SEARCH_PARAMS,
    )
    assert out.qds_operations == paper_qds_operations(n, f)
    assert out.key_bits == out.qds_operations * SEARCH_PARAMS.key_bits_per_operation
    assert out.messages == 4 * out.qds_operations  # sign, forward, reveal, accept
    assert set(out.outputs.values()) == {b"v"}


@pytest.mark.parametrize("n", [3, 5, 9])
def test_detectable_mode_honest_run_counts_and_agrees(n: int) -> None:
    value = bytes(range(63))  # ~500 bits, full n = 128
    out = run_qba(
        committee=[10 + i for i in range(n)],
        leader_value=value,
        f=(n - 1) // 2,
        keys=SeededKeySupply(0),
        polys=full_polys(),
    )
    assert out.qds_operations == detectable_qds_operations(n)
    assert out.key_bits == out.qds_operations * 768
    assert set(out.outputs) == {10 + i for i in range(n)}
    assert set(out.outputs.values()) == {value}


def _equivocate(mode: QbaMode, n: int, f: int, table: dict[tuple[int, int], bytes]):  # type: ignore[no-untyped-def]
    return run_qba(
        mode=mode,
        committee=list(range(n)),
        leader_value=b"0",
        f=f,
        keys=SeededKeySupply(1),
        polys=search_polys(),
        params=SEARCH_PARAMS,
        adversary=EquivocatingLeader.from_table(table),
        faulty=[0],
    )


def test_paper_mode_counterexample_n4_f1_splits_honest_members() -> None:
    out = _equivocate(QbaMode.PAPER, 4, 1, COUNTEREXAMPLE_4)
    # node 1 records {0,0,0,1} → 0, node 3 records {0,1,1,1} → 1, node 2 a 2:2 tie → ⊥
    assert out.outputs == {1: b"0", 2: None, 3: b"1"}


def test_paper_mode_counterexample_n5_f2_splits_node_1_from_node_4() -> None:
    out = _equivocate(QbaMode.PAPER, 5, 2, COUNTEREXAMPLE_5)
    assert out.qds_operations == 12 + 2 * 6  # nodes 2 and 3 hold ⊥ and relay nothing
    assert out.outputs == {1: b"0", 2: None, 3: None, 4: b"1"}


def test_paper_mode_relays_move_node_4_off_its_round_one_majority() -> None:
    """Finding 12: the relay round changes an honest output (round 1 alone: f = 1)."""
    round_one = _equivocate(QbaMode.PAPER, 5, 1, REPAIRED_BY_RELAYS_5)
    assert round_one.outputs == {1: b"0", 2: b"0", 3: b"0", 4: b"1"}
    out = _equivocate(QbaMode.PAPER, 5, 2, REPAIRED_BY_RELAYS_5)
    assert out.outputs == {1: b"0", 2: b"0", 3: b"0", 4: b"0"}


@pytest.mark.parametrize(
    ("n", "f", "table"),
    [(4, 1, COUNTEREXAMPLE_4), (5, 2, COUNTEREXAMPLE_5), (5, 2, REPAIRED_BY_RELAYS_5)],
)
def test_detectable_mode_survives_both_counterexamples(n: int, f: int, table) -> None:  # type: ignore[no-untyped-def]
    out = _equivocate(QbaMode.DETECTABLE, n, f, table)
    decided = {v for v in out.outputs.values() if v is not None}
    assert len(decided) <= 1
    assert None in out.outputs.values()  # the equivocation is detected, not hidden


@pytest.mark.parametrize(
    "adversary",
    [SilentAdversary(), TamperingRelay(b"evil"), RandomByzantine(3, p=1.0), RandomByzantine(4)],
    ids=["silent", "tampering", "random-all", "random-half"],
)
@pytest.mark.parametrize(("n", "faulty"), [(3, [2]), (5, [3, 4]), (7, [1, 5, 6])])
def test_detectable_validity_with_an_honest_leader(adversary, n: int, faulty: list[int]) -> None:  # type: ignore[no-untyped-def]
    out = run_qba(
        committee=list(range(n)),
        leader_value=b"block",
        f=(n - 1) // 2,
        keys=SeededKeySupply(n),
        polys=search_polys(),
        params=SEARCH_PARAMS,
        adversary=adversary,
        faulty=faulty,
    )
    assert set(out.outputs.values()) == {b"block"}


def test_withheld_or_wrong_key_bits_are_proven_and_excluded() -> None:
    out = run_qba(
        committee=[0, 1, 2, 3, 4],
        leader_value=b"v",
        f=2,
        keys=SeededKeySupply(2),
        polys=search_polys(),
        params=SEARCH_PARAMS,
        adversary=SilentAdversary(),
        faulty=[4],
    )
    assert out.excluded is not None
    assert all(out.excluded[m] == {4} for m in (1, 2, 3))
    assert set(out.outputs.values()) == {b"v"}


def test_paper_mode_is_not_valid_against_a_silent_member_at_n3() -> None:
    """With N = 3, f = 1 one silent Charlie blocks node 1's only verification: ⊥ in paper mode.

    Detectable mode recovers (the silent partner is proven faulty); the appendix has no such rule.
    """
    kwargs = dict(
        committee=[0, 1, 2], leader_value=b"v", f=1, polys=search_polys(), params=SEARCH_PARAMS
    )
    paper = run_qba(
        mode=QbaMode.PAPER,
        keys=SeededKeySupply(0),
        adversary=SilentAdversary(),
        faulty=[2],
        **kwargs,
    )  # type: ignore[arg-type]
    detectable = run_qba(keys=SeededKeySupply(0), adversary=SilentAdversary(), faulty=[2], **kwargs)  # type: ignore[arg-type]
    assert paper.outputs == {0: b"v", 1: None}
    assert detectable.outputs == {0: b"v", 1: b"v"}


def test_messages_cross_only_through_the_driver() -> None:
    dropped = []

    def cut_off_1(msg):  # type: ignore[no-untyped-def]
        if msg.recipient == 1:
            dropped.append(msg)
            return None
        return msg

    out = run_qba(
        committee=[0, 1, 2, 3],
        leader_value=b"v",
        f=1,
        keys=SeededKeySupply(0),
        polys=search_polys(),
        params=SEARCH_PARAMS,
        intercept=cut_off_1,
    )
    assert sum(isinstance(m, SignedValue) for m in dropped) == 2
    assert out.outputs[1] is None  # nothing reached node 1
    # to 2 and 3, node 1 looks like a member that withheld its key bits (the synchronous model)
    assert out.outputs[2] == out.outputs[3] == b"v"


def test_paper_mode_needs_room_for_relays() -> None:
    with pytest.raises(ValueError):
        run_qba(
            mode=QbaMode.PAPER,
            committee=[0, 1, 2, 3],
            leader_value=b"v",
            f=2,
            keys=SeededKeySupply(0),
            polys=search_polys(),
        )


def test_batched_and_unbatched_checks_agree_at_full_size() -> None:
    """Paper mode N = 7 signs 510 times: batches exceed BATCH_MIN, so the vectorised path runs.

    A random adversary is consulted in a different order when checks are batched, so its recorded
    deviations are replayed (order-independent) for the comparison.
    """
    recorder = RecordingAdversary(RandomByzantine(11, p=0.3))
    kwargs = dict(
        mode=QbaMode.PAPER,
        committee=list(range(7)),
        leader_value=bytes(range(63)),
        f=3,
        polys=full_polys(),
        faulty=[2, 5],
    )
    batched = run_qba(keys=SeededKeySupply(5), adversary=recorder, batch=True, **kwargs)  # type: ignore[arg-type]
    replay = ScriptedAdversary(recorder.decisions)
    unbatched = run_qba(keys=SeededKeySupply(5), adversary=replay, batch=False, **kwargs)  # type: ignore[arg-type]
    assert batched.outputs == unbatched.outputs
    assert batched.qds_operations == unbatched.qds_operations
    assert sorted(batched.deviations) == sorted(unbatched.deviations)
    assert len(recorder.decisions) > 50
