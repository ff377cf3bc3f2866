"""An intercept-resend eavesdropper on every quantum channel of node 0: each BB84 session of those
links sees ~25 % QBER and aborts with a COMPROMISED log line, no key is kept, every committee
that needs a key with node 0 cannot run QBA and its view changes — and the chain goes on with
committees that do not include node 0 (issue 11 item 4)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from qbfl.consensus.stakes import StakeLedger
from qbfl.ledger.store import SqliteLedgerStore
from qbfl.orchestrator.launch import UpConfig, run_up
from tests.e2e.ports import free_range

pytestmark = pytest.mark.e2e
NODES, ROUNDS = 5, 3
# Round r's view-0 committee is drawn from a genesis hash that covers fresh identity keys and a
# hedged publisher signature, so it differs per run: with 3 of 5 drawn, node 0 misses all three
# view-0 committees in (2/5)^3 = 6.4 % of runs, and such a run never needs a view change. The
# test then runs a new network (at most ATTEMPTS in all: a miss in every one is ~0.03 %).
ATTEMPTS = 3


def _run(out: Path) -> tuple[str, list[tuple[int, tuple[int, ...]]]]:
    """One network; the logs and, per block, (view, the round's view-0 committee)."""
    base = free_range(NODES + 1)
    config = UpConfig(
        nodes=NODES,
        rounds=ROUNDS,
        committee=3,
        out=out,
        round_timeout_s=5.0,
        eavesdrop=tuple((0, peer) for peer in range(1, NODES)),
        base_port=base,
        publisher_port=base + NODES,
        linger_s=30.0,
        stall_s=240.0,
    )
    summary = run_up(config, stream=io.StringIO())
    assert summary["honest_heads_agree"] and summary["height"] == ROUNDS
    logs = "".join(p.read_text() for p in (out / "logs").glob("node-*.log"))
    assert "COMPROMISED" in logs and "QBER" in logs
    store = SqliteLedgerStore(out / "node-1" / "ledger.sqlite")
    try:
        stakes = StakeLedger(store.genesis)
        blocks = store.range(1, ROUNDS + 1)
    finally:
        store.close()
    assert all(0 not in b.committee for b in blocks), [b.committee for b in blocks]
    drawn = []
    for block in blocks:
        drawn.append((block.view, stakes.committee(0).members))
        stakes.apply(block)
    return logs, drawn


def test_tapped_links_abort_and_their_committees_give_way(tmp_path: Path) -> None:
    exercised = False
    for attempt in range(ATTEMPTS):
        logs, drawn = _run(tmp_path / f"attempt-{attempt}")
        for view, first_committee in drawn:
            if 0 in first_committee:  # its QBA cannot start: the round must change view
                assert view >= 1, drawn
                exercised = True
        if exercised:
            assert "QBA could not start" in logs
            return
    pytest.fail(f"node 0 was in no view-0 committee in {ATTEMPTS} networks: {drawn}")
