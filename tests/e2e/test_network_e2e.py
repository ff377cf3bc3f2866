"""A real network in the default suite: a publisher and 7 `qbfl-node` processes on loopback.

Two nodes are malicious (a model attacker and a consensus attacker); after 3 rounds every honest
node holds the same head, the bit-flipping node's updates were never selected (Alg. 2 keeps them
out), and every node's ledger verifies again when reopened from disk.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from qbfl.ledger.chain import Chain
from qbfl.ledger.store import SqliteLedgerStore
from qbfl.node.roles import parse_malicious_spec
from qbfl.orchestrator.launch import UpConfig, run_up
from tests.e2e.ports import free_range

ROUNDS = 3


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("net7")
    base = free_range(8)
    config = UpConfig(
        task="mnist",
        nodes=7,
        malicious=parse_malicious_spec("1:bitflip,1:wrongagg"),
        rounds=ROUNDS,
        out=out,
        round_timeout_s=8.0,
        base_port=base,
        publisher_port=base + 7,
        linger_s=60.0,  # `up` stops the nodes itself once it has seen every block
        stall_s=90.0,
    )
    summary = run_up(config, stream=io.StringIO())
    return {"summary": summary, "out": out}


def test_every_honest_node_ends_on_the_same_head(network: dict) -> None:
    summary = network["summary"]
    honest = [n for n in summary["node_summaries"] if n["role"] == "honest"]
    assert len(honest) == 5
    assert {n["height"] for n in honest} == {ROUNDS}
    assert len({n["head_hash"] for n in honest}) == 1
    assert summary["honest_heads_agree"] is True
    assert summary["head_hash"] == honest[0]["head_hash"]  # the observer verified that chain too


def test_the_bitflip_attacker_is_never_selected(network: dict) -> None:
    summary = network["summary"]
    attacker = next(n["node"] for n in summary["node_summaries"] if n["role"] == "bitflip")
    store = SqliteLedgerStore(Path(network["out"]) / "node-0" / "ledger.sqlite")
    try:
        blocks = store.range(1, store.height + 1)
    finally:
        store.close()
    assert len(blocks) == ROUNDS
    for block in blocks:
        assert attacker not in block.selected, f"block {block.height} selected {block.selected}"


def test_ledgers_verify_when_reopened(network: dict) -> None:
    for node_dir in sorted(Path(network["out"]).glob("node-*")):
        store = SqliteLedgerStore(node_dir / "ledger.sqlite")
        try:
            chain = Chain(store)  # re-verifies every block: signatures, committees, hashes
            assert chain.height >= ROUNDS - 1  # a malicious node may lag; honest ones are at 3
        finally:
            store.close()


def test_sigterm_stops_every_node_cleanly(network: dict) -> None:
    codes = network["summary"]["exit_codes"]
    assert len(codes) == 7 and set(codes.values()) == {0}, codes


def test_results_are_written(network: dict) -> None:
    out = Path(network["out"])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["height"] == ROUNDS and len(summary["per_round"]) == ROUNDS
    memory = summary["memory_peak"]  # sampled while the nodes ran
    assert memory["samples"] >= 1 and 0 < memory["max_node_pss_bytes"] < memory["pss_bytes"]
    assert (out / "rounds.csv").read_text().count("\n") == ROUNDS + 1
    assert (out / "accuracy.png").stat().st_size > 1000
