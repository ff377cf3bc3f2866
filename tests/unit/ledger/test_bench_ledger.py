"""Smoke test of the ledger benchmark on a tiny chain, so it cannot rot unnoticed."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from qbfl.bench.ledger import build_chain, command
from qbfl.ledger.chain import verify_chain


def test_bench_chain_is_valid() -> None:
    genesis, blocks = build_chain(3, seed=1)
    verify_chain(genesis, blocks)
    assert all(len(b.votes) == 5 and b.leader_signature for b in blocks)


def test_bench_command_emits_rows(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.chdir(tmp_path)  # bench/results/ledger.json lands here, not in the checkout
    result = CliRunner().invoke(command, ["--blocks", "3", "--json"])
    assert result.exit_code == 0, result.output
    assert '"sqlite_blocks_per_s"' in result.output
    assert (tmp_path / "bench/results/ledger.json").exists()
