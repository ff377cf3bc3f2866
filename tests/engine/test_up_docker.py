"""`qbfl-orchestrator up --backend docker` end to end on a real engine: a 4-node network in containers.

Real node and publisher processes in the project image, host networking on free loopback ports.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from qbfl.orchestrator.docker_backend import DockerNetwork
from qbfl.orchestrator.docker_launch import project_name
from tests.e2e.ports import free_range

pytestmark = pytest.mark.docker
IMAGE = os.environ.get("QBFL_TEST_IMAGE", "qbfl-ci:latest")
ORCHESTRATOR = Path(sys.executable).with_name("qbfl-orchestrator")


def _up(out: Path, base: int) -> subprocess.CompletedProcess[str]:
    command = [
        str(ORCHESTRATOR), "up", "--backend", "docker", "--image", IMAGE,
        "--nodes", "4", "--rounds", "2", "--malicious", "1:labelflip",
        "--publisher-port", str(base), "--out", str(out), "--stall", "240",
    ]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=600)


def test_up_runs_containers_and_down_removes_them(docker_client: Any, tmp_path: Path) -> None:
    out = tmp_path / "net"
    base = free_range(6)  # the publisher on base, node i on base + 1 + i
    net = DockerNetwork(project_name(out), image=IMAGE, client=docker_client)
    try:
        first = _up(out, base)
        assert first.returncode == 0, first.stdout + first.stderr
        summary = json.loads((out / "summary.json").read_text())
        assert summary["backend"] == "docker" and summary["height"] == 2
        assert summary["honest_heads_agree"] is True
        assert summary["memory_peak"]["working_set_bytes"] > 0
        # The containers stay (stopped, with their logs and volumes) until `down`.
        assert len(net.containers()) == 5
        assert all(c.status == "exited" for c in net.containers())

        # A second `up` into the same --out refuses; once --out is deleted, the stale containers
        # and volumes (ledgers of the old genesis) are removed and a fresh network runs.
        again = _up(out, base)
        assert again.returncode != 0 and "--resume" in again.stderr
        shutil.rmtree(out)
        fresh = _up(out, base)
        assert fresh.returncode == 0, fresh.stdout + fresh.stderr
        assert "removed" in fresh.stdout and "leftovers" in fresh.stdout

        down = subprocess.run(
            [str(ORCHESTRATOR), "down", "--out", str(out)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert down.returncode == 0, down.stderr
        assert net.containers() == []
        names = {v.name for v in docker_client.volumes.list()}  # type: ignore[attr-defined]
        assert not any(name.startswith(net.project) for name in names)
    finally:
        net.down()
