"""`qbfl-node health` / `qbfl-publisher health` against a real gRPC health server on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest
from click.testing import CliRunner
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from qbfl.node.cli import main as node_main
from qbfl.node.health_cli import EXIT_NOT_SERVING, EXIT_SERVING, EXIT_UNREACHABLE, check_health
from qbfl.publisher.cli import main as publisher_main


@pytest.fixture
def health_server() -> Iterator[tuple[str, health.HealthServicer]]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    try:
        yield f"127.0.0.1:{port}", servicer
    finally:
        server.stop(grace=None)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_not_serving_then_serving(health_server: tuple[str, health.HealthServicer]) -> None:
    address, servicer = health_server
    runner = CliRunner()
    result = runner.invoke(node_main, ["health", "--address", address])
    assert result.exit_code == EXIT_NOT_SERVING, result.output
    assert "NOT_SERVING" in result.output
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    result = runner.invoke(publisher_main, ["health", "--address", address])
    assert result.exit_code == EXIT_SERVING, result.output
    assert check_health(address) == "SERVING"


def test_unknown_service_is_not_serving(health_server: tuple[str, health.HealthServicer]) -> None:
    address, servicer = health_server
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    assert check_health(address, service="qbfl.v1.Nothing") == "SERVICE_UNKNOWN"
    result = CliRunner().invoke(
        node_main, ["health", "--address", address, "--service", "qbfl.v1.Nothing", "-q"]
    )
    assert result.exit_code == EXIT_NOT_SERVING
    assert result.output == ""


def test_nothing_listening_is_unreachable() -> None:
    address = f"127.0.0.1:{_free_port()}"
    result = CliRunner().invoke(node_main, ["health", "--address", address, "--timeout", "2"])
    assert result.exit_code == EXIT_UNREACHABLE
    assert "unreachable" in result.output


def test_address_from_environment(health_server: tuple[str, health.HealthServicer]) -> None:
    address, servicer = health_server
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    result = CliRunner().invoke(node_main, ["health"], env={"QBFL_HEALTH_ADDRESS": address})
    assert result.exit_code == EXIT_SERVING, result.output
