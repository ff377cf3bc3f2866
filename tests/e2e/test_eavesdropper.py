"""An intercept-resend eavesdropper on every quantum channel of node 0: each BB84 session of those
links sees ~25 % QBER and aborts with a COMPROMISED log line, no key is kept, every committee
that needs a key with node 0 cannot run QBA and its view changes — and the chain goes on with
committees that do not include node 0 (issue 11 item 4)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from qbfl.ledger.store import SqliteLedgerStore
from qbfl.orchestrator.launch import UpConfig, run_up
from tests.e2e.ports import free_range

pytestmark = pytest.mark.e2e
NODES, ROUNDS = 5, 3


def test_tapped_links_abort_and_their_committees_give_way(tmp_path: Path) -> None:
    base = free_range(NODES + 1)
    config = UpConfig(
        nodes=NODES,
        rounds=ROUNDS,
        committee=3,
        out=tmp_path,
        round_timeout_s=5.0,
        eavesdrop=tuple((0, peer) for peer in range(1, NODES)),
        base_port=base,
        publisher_port=base + NODES,
        linger_s=30.0,
        stall_s=240.0,
    )
    summary = run_up(config, stream=io.StringIO())
    assert summary["honest_heads_agree"] and summary["height"] == ROUNDS
    logs = "".join(p.read_text() for p in (tmp_path / "logs").glob("node-*.log"))
    assert "COMPROMISED" in logs and "QBER" in logs
    store = SqliteLedgerStore(tmp_path / "node-1" / "ledger.sqlite")
    try:
        blocks = store.range(1, ROUNDS + 1)
    finally:
        store.close()
    assert all(0 not in b.committee for b in blocks), [b.committee for b in blocks]
    assert sum(b.view for b in blocks) >= 1 or "QBA could not start" in logs
