"""`up --backend docker` refuses the local-only options before it touches an engine."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from qbfl.orchestrator.cli import main


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        (["--eavesdrop", "1-2"], "--eavesdrop"),
        (["--qkd", "seeded"], "--qkd seeded"),
        (["--base-port", "52000"], "--base-port"),
        (["--resume"], "--resume"),
    ],
)
def test_local_only_options_are_usage_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, extra: list[str], named: str
) -> None:
    def no_engine(*args: object, **kwargs: object) -> None:
        raise AssertionError("the engine was contacted")

    monkeypatch.setattr("qbfl.orchestrator.docker_launch.DockerNetwork", no_engine)
    out = tmp_path / "net"
    result = CliRunner().invoke(
        main, ["up", "--backend", "docker", "--nodes", "4", "--out", str(out), *extra]
    )
    assert result.exit_code == 2, result.output
    assert named in result.output and "local backend only" in result.output
    assert not out.exists()  # nothing written: the refusal comes first
