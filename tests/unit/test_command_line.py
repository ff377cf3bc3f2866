"""CLI edge: typed errors become one line and a documented exit code, never a traceback."""

from pathlib import Path

import pytest
from click.testing import CliRunner

from qbfl.command_line import EXIT_MISSING_DATA
from qbfl.orchestrator.cli import main as orchestrator


def test_missing_dataset_names_the_fetch_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QBFL_DATA_DIR", str(tmp_path / "nothing"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    result = CliRunner().invoke(
        orchestrator,
        [
            "simulate",
            "--task",
            "mnist",
            "--nodes",
            "5",
            "--rounds",
            "1",
            "--out",
            str(tmp_path / "o"),
        ],
    )
    assert result.exit_code == EXIT_MISSING_DATA, result.output
    assert "scripts/fetch-data.sh" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "o" / "summary.json").exists()


def test_bad_flag_is_a_usage_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        orchestrator, ["simulate", "--nodes", "5", "--malicious", "6", "--out", str(tmp_path)]
    )
    assert result.exit_code == 2
    assert "malicious" in result.output
