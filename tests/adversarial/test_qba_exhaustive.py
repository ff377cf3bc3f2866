"""Every leader signing for N = 4 (2^6) and N = 5 (2^12) in detectable mode: consistency always, validity when uniform."""

from __future__ import annotations

import pytest
from qba_fixtures import SEARCH_PARAMS, search_polys

from qbfl.consensus.qba import QbaMode, enumerate_leader_signings, run_qba
from qbfl.crypto.keysupply import SeededKeySupply


@pytest.mark.parametrize(("n", "f", "expected_runs"), [(4, 1, 2**6), (5, 2, 2**12)])
def test_every_leader_signing_keeps_detectable_mode_consistent(
    n: int, f: int, expected_runs: int
) -> None:
    committee = list(range(n))
    polys = search_polys()
    runs = 0
    outcomes: set[tuple[bytes | None, ...]] = set()
    for table, adversary in enumerate_leader_signings(committee):
        out = run_qba(
            committee=committee,
            leader_value=b"0",
            f=f,
            keys=SeededKeySupply(runs),
            polys=polys,
            params=SEARCH_PARAMS,
            adversary=adversary,
            faulty=[0],
        )
        runs += 1
        decided = {v for v in out.outputs.values() if v is not None}
        assert len(decided) <= 1, f"consistency broken by leader table {table}: {out.outputs}"
        if len(set(table.values())) == 1:  # a leader that signs one value everywhere acts honestly
            assert set(out.outputs.values()) == set(table.values()), table
        outcomes.add(tuple(out.outputs[m] for m in committee[1:]))
    assert runs == expected_runs
    # the search is not vacuous: some tables make members decide, others leave them at ⊥
    assert (None,) * (n - 1) in outcomes and any(None in o and set(o) != {None} for o in outcomes)


def test_the_same_exhaustive_search_breaks_paper_mode() -> None:
    committee = [0, 1, 2, 3]
    broken = 0
    for _table, adversary in enumerate_leader_signings(committee):
        out = run_qba(
            mode=QbaMode.PAPER,
            committee=committee,
            leader_value=b"0",
            f=1,
            keys=SeededKeySupply(0),
            polys=search_polys(),
            params=SEARCH_PARAMS,
            adversary=adversary,
            faulty=[0],
        )
        broken += len({v for v in out.outputs.values() if v is not None}) > 1
    assert broken > 0
