"""Generated compose files on a real engine with Compose v2: config accepted; host-network start gated on health."""

from __future__ import annotations

import json
import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from qbfl.orchestrator.cli import main

pytestmark = pytest.mark.docker
ROOT = Path(__file__).resolve().parents[2]
IMAGE = os.environ.get("QBFL_TEST_IMAGE", "qbfl-ci:latest")


def _free_base_port(count: int) -> int:
    for base in range(47200, 60000, 50):
        try:
            socks = []
            for port in range(base, base + count):
                sock = socket.socket()
                socks.append(sock)
                sock.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
    raise RuntimeError("no free block of loopback ports")


def test_committed_file_passes_compose_config(compose_v2: list[str]) -> None:
    result = subprocess.run(
        [*compose_v2, "-f", str(ROOT / "docker-compose.yml"), "config", "--quiet"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr


@pytest.fixture
def host_project(
    compose_v2: list[str], docker_client: object, project: str, tmp_path: Path
) -> Iterator[list[str]]:
    base = _free_base_port(4)
    generated = tmp_path / "compose.yml"
    result = CliRunner().invoke(
        main,
        [
            "compose",
            "--nodes",
            "3",
            "--malicious",
            "1:bitflip",
            "--network",
            "host",
            "--base-port",
            str(base),
            "--image",
            IMAGE,
            "--out",
            str(generated),
        ],
    )
    assert result.exit_code == 0, result.output
    # Stand-ins for the real processes: each writes into its volume and answers health SERVING.
    code = (Path(__file__).parent / "fake_health_server.py").read_text().replace("$", "$$")
    override = {
        "services": {
            name: {
                "command": ["python", "-c", code, f"/var/lib/qbfl/{name}"],
                "healthcheck": {"interval": "1s", "start_period": "60s"},
            }
            for name in ["publisher", "node-0", "node-1", "node-2"]
        }
    }
    (tmp_path / "override.yml").write_text(json.dumps(override))
    command = [
        *compose_v2,
        "-p",
        project,
        "--project-directory",
        str(ROOT),
        "-f",
        str(generated),
        "-f",
        str(tmp_path / "override.yml"),
    ]
    try:
        yield command
    finally:
        subprocess.run([*command, "down", "--volumes", "--timeout", "5"], capture_output=True)


def test_host_network_file_starts_after_publisher_health(host_project: list[str]) -> None:
    up = subprocess.run(
        [*host_project, "up", "-d", "--wait", "--no-build"],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert up.returncode == 0, up.stderr
    ps = subprocess.run([*host_project, "ps", "--format", "json"], capture_output=True, text=True)
    lines = [json.loads(line) for line in ps.stdout.splitlines() if line.strip()]
    rows = lines[0] if len(lines) == 1 and isinstance(lines[0], list) else lines
    assert sorted(r["Service"] for r in rows) == ["node-0", "node-1", "node-2", "publisher"]
    assert all(r["Health"] == "healthy" for r in rows), rows
    # A fresh named volume is writable by the image's non-root user, without a chown.
    out = subprocess.run(
        [*host_project, "exec", "-T", "node-1", "sh", "-c", "id -u; cat /var/lib/qbfl/node-1/ok"],
        capture_output=True,
        text=True,
    )
    assert out.stdout.split() == ["10001", "ok"], out.stderr
