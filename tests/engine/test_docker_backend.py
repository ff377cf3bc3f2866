"""Docker SDK primitives (qbfl.orchestrator.docker_backend) on a real engine, with trivial commands in the project image."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from qbfl.orchestrator.docker_backend import DockerBackendError, DockerNetwork
from qbfl.orchestrator.docker_image import ImageBuild, build_image
from qbfl.orchestrator.services import (
    DATA_ROOT,
    LABEL_PROJECT,
    NetworkSettings,
    ServiceSpec,
    TaskSettings,
    plan_network,
)

pytestmark = pytest.mark.docker
IMAGE = os.environ.get("QBFL_TEST_IMAGE", "qbfl-ci:latest")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _spec(name: str, command: list[str], port: int) -> ServiceSpec:
    return ServiceSpec(
        name=name,
        command=tuple(command),
        environment={"QBFL_HEALTH_ADDRESS": f"127.0.0.1:{port}"},
        labels={"qbfl.node-id": "0"},
        volume=name,
        health_command=("qbfl-node", "health", "--quiet"),
        grpc_port=port,
        node_id=0,
    )


SLEEPER = (
    "import pathlib, sys, time\n"
    f"p = pathlib.Path('{DATA_ROOT}/count')\n"
    "n = int(p.read_text()) + 1 if p.exists() else 1\n"
    "p.write_text(str(n))\n"
    "print('started', n, flush=True)\n"
    "time.sleep(3600)\n"
)


def _wait(predicate: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.2)


def test_lifecycle_faults_logs_memory_and_down(docker_client: Any, cleanup_project: str) -> None:
    net = DockerNetwork(cleanup_project, image=IMAGE, client=docker_client)
    spec = _spec("node-0", ["python", "-c", SLEEPER], _free_port())
    containers = net.start([spec])
    container = containers["node-0"]
    container.reload()
    host = container.attrs["HostConfig"]
    assert host["Init"] is True and host["NetworkMode"] == "host"
    assert container.labels[LABEL_PROJECT] == cleanup_project
    assert container.attrs["Config"]["User"] == "10001:10001"

    logs = net.follow_logs("node-0")
    assert next(logs) == "started 1"  # the non-root user wrote into the fresh named volume
    assert net.status()["node-0"].startswith("running")

    usage = net.memory("node-0")
    assert usage.usage_bytes > 1_000_000 and 0 < usage.working_set_bytes <= usage.usage_bytes

    net.pause("node-0")
    assert net.status()["node-0"] == "paused"
    net.unpause("node-0")

    net.kill("node-0")
    _wait(lambda: net.status()["node-0"] == "exited (137)")
    net.start_again("node-0")  # same container and volume: the counter goes on
    _wait(lambda: "started 2" in net.tail("node-0"))
    net.restart("node-0", timeout=5)
    _wait(lambda: "started 3" in net.tail("node-0"))

    code, out = net.exec("node-0", ["cat", f"{DATA_ROOT}/count"])
    assert (code, out) == (0, "3")

    removed = net.down(timeout=5)
    assert f"{cleanup_project}-node-0" in removed
    assert f"volume {cleanup_project}-node-0" in removed
    assert net.containers() == []


def test_health_probe_against_nothing_is_unhealthy(
    docker_client: Any, cleanup_project: str
) -> None:
    net = DockerNetwork(cleanup_project, image=IMAGE, client=docker_client)
    port = _free_port()
    net.start([_spec("node-0", ["sleep", "3600"], port)])
    # Nothing listens on the port: `qbfl-node health` exits non-zero (2 = unreachable).
    code, out = net.exec("node-0", ["qbfl-node", "health", "--address", f"127.0.0.1:{port}"])
    assert code == 2 and "unreachable" in out
    assert net.health("node-0") == "starting"


def test_planned_services_start_in_the_image(docker_client: Any, cleanup_project: str) -> None:
    """The plan's commands reach the container verbatim (the publisher's shell line included)."""
    settings = NetworkSettings(
        task=TaskSettings(nodes=3, rounds=2), network="host", base_port=_free_port()
    )
    net = DockerNetwork(cleanup_project, image=IMAGE, client=docker_client)
    specs = plan_network(settings)
    net.start(specs[:1])
    publisher = net.container("publisher")
    publisher.reload()
    assert publisher.attrs["Config"]["Cmd"] == list(specs[0].command)
    assert publisher.attrs["Config"]["Healthcheck"]["Test"] == [
        "CMD",
        "qbfl-publisher",
        "health",
        "--quiet",
    ]


def test_errors_name_the_container(docker_client: Any, project: str) -> None:
    net = DockerNetwork(project, image=IMAGE, client=docker_client)
    with pytest.raises(DockerBackendError, match=f"{project}-node-9"):
        net.kill("node-9")
    with pytest.raises(ValueError, match="share a gRPC port"):
        net.start([_spec("a", ["true"], 1), _spec("b", ["true"], 1)])


def test_build_serves_wheels_on_loopback_and_adds_cas(
    docker_client: Any, tmp_path: Path, project: str
) -> None:
    """A host-network build sees the wheel folder over loopback and the extra CAs in its context,
    while .dockerignore keeps the rest out."""
    context = tmp_path / "context"
    (context / "extra-ca").mkdir(parents=True)
    (context / "ignored.txt").write_text("must not reach the engine")
    (context / ".dockerignore").write_text("ignored.txt\n")
    (context / "Dockerfile").write_text(
        "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nARG WHEELS_URL=\n"
        "COPY . /tmp/context/\n"
        'RUN python -c "import sys, urllib.request; '
        "print(urllib.request.urlopen(sys.argv[1] + 'probe.whl').read().decode())\" "
        '"$WHEELS_URL" > /tmp/probe\n'
    )
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    (wheels / "probe.whl").write_text("wheel bytes")
    ca = tmp_path / "proxy.crt"
    ca.write_text("not really a certificate")
    tag = f"{project}:build"
    lines: list[str] = []
    try:
        build_image(
            docker_client,
            ImageBuild(tag=tag, context=context, base_image=IMAGE, wheel_dir=wheels, extra_ca=[ca]),
            on_log=lines.append,
        )
        out = docker_client.containers.run(
            tag,
            ["sh", "-c", "cat /tmp/probe; ls /tmp/context /tmp/context/extra-ca"],
            network_mode="none",
            remove=True,
        ).decode()
    finally:
        docker_client.images.remove(tag, force=True)
    assert "wheel bytes" in out
    assert "proxy.crt" in out and "ignored.txt" not in out
    assert lines, "the build's log lines reach on_log"
    assert not list(context.joinpath("extra-ca").iterdir()), "the working tree stays untouched"
