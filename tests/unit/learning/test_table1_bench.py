"""qbfl-bench table1: every Table 1 row matches the paper, and the command writes its JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from qbfl.bench.table1 import command, count_rows


def test_every_row_matches_the_paper() -> None:
    rows = count_rows()
    assert len(rows) == 7 and all(r["match"] for r in rows)
    totals = {r["model"]: r["mpo_layer"] for r in rows if r["layer"] == "total"}
    assert totals == {"fcnn-mpo": "reduction 97.6 %", "cnn-mpo": "reduction 92.5 %"}


def test_command_prints_json_and_writes_results(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(command, ["--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["benchmark"] == "table1" and len(doc["rows"]) == 7
    assert json.loads((tmp_path / "bench/results/table1.json").read_text())["rows"] == doc["rows"]
