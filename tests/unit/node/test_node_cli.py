"""`qbfl-node` and `qbfl-publisher` command lines: bad flags, clear give-ups, JSON logs."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from qbfl.net.logs import JsonFormatter
from qbfl.node.cli import main as node_main
from qbfl.publisher.cli import main as publisher_main
from tests.e2e.ports import free_range


def test_bad_flags_exit_2_with_the_reason() -> None:
    runner = CliRunner()
    result = runner.invoke(node_main, ["start", "--id", "7", "--malicious", "nosuchrole"])
    assert result.exit_code == 2 and "nosuchrole" in result.output
    result = runner.invoke(node_main, ["start", "--id", "7", "--malicious", "bitflip+labelflip"])
    assert result.exit_code == 2 and "at most one model attack" in result.output
    result = runner.invoke(node_main, ["start", "--id", "-1"])
    assert result.exit_code == 2
    result = runner.invoke(node_main, ["start", "--id", "3", "--listen", "nohostport"])
    assert result.exit_code == 2 and "HOST:PORT" in result.output
    result = runner.invoke(node_main, ["start", "--id", "3", "--dp-accounting", "round"])
    assert result.exit_code == 2 and "--dp-accounting needs --dp" in result.output
    result = runner.invoke(node_main, ["start", "--id", "3", "--dp", "--dp-accounting", "epoch"])
    assert result.exit_code == 2 and "'epoch' is not one of" in result.output
    result = runner.invoke(publisher_main, ["init", "--task", "cifar"])
    assert result.exit_code == 2


def test_publisher_init_works_as_typed_and_is_idempotent(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    runner = CliRunner()
    monkeypatch.chdir(tmp_path)  # the default --out is relative: qbfl-data/publisher
    first = runner.invoke(publisher_main, ["init", "--task", "mnist"])
    assert first.exit_code == 0, first.output
    assert "50 nodes" in first.output and "qbfl-publisher serve" in first.output
    assert "qbfl-node start --id 0" in first.output
    again = runner.invoke(publisher_main, ["init", "--task", "mnist"])
    assert again.exit_code == 0 and "already initialised" in again.output
    other = runner.invoke(publisher_main, ["init", "--task", "mnist", "--nodes", "7"])
    assert other.exit_code == 1 and "different task" in other.output


def test_node_without_a_publisher_gives_up_with_what_to_fix(tmp_path: Path) -> None:
    port = free_range(2)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "qbfl.node.cli",
            "start",
            "--id",
            "0",
            "--publisher",
            f"127.0.0.1:{port}",
            "--listen",
            f"127.0.0.1:{port + 1}",
            "--data-dir",
            str(tmp_path / "n0"),
            "--publisher-retries",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1, done.stderr
    assert "qbfl-publisher serve" in done.stderr and "Traceback" not in done.stderr
    assert (tmp_path / "n0" / "node.key").stat().st_mode & 0o077 == 0


def test_json_log_lines_are_json_objects() -> None:
    record = logging.makeLogRecord(
        {"name": "qbfl.node", "levelname": "INFO", "levelno": 20, "msg": "block %d", "args": (3,)}
    )
    doc = json.loads(JsonFormatter().format(record))
    assert doc["msg"] == "block 3" and doc["level"] == "info" and doc["logger"] == "qbfl.node"


def test_the_command_lines_import_no_torch() -> None:
    # `qbfl-node health` runs every few seconds in every container: it must stay light
    code = "import sys, qbfl.node.cli, qbfl.publisher.cli; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
