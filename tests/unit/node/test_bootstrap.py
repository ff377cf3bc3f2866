"""A node's bootstrap against an in-process publisher: registration, verified genesis, clear give-ups."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from qbfl._proto.v1 import publisher_pb2_grpc
from qbfl.crypto.signing import SigningKey
from qbfl.net.channel import server as grpc_server
from qbfl.node.bootstrap import PublisherUnreachable, WrongGenesis, bootstrap
from qbfl.publisher.service import PublisherServicer, Registry
from qbfl.publisher.workspace import Workspace, build_task
from tests.e2e.ports import free_range


def _serve(directory: Path, nodes: int = 4):  # type: ignore[no-untyped-def]
    spec = build_task(
        task="mnist",
        nodes=nodes,
        f=None,
        committee=3,
        rounds=3,
        qba="detectable",
        seed=0,
        aggregator="qbfl",
        round_timeout_s=10.0,
        dp=False,
    )
    registry = Registry(Workspace.create(directory, spec)[0])
    server = grpc_server(4)
    publisher_pb2_grpc.add_PublisherServicer_to_server(PublisherServicer(registry), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, f"127.0.0.1:{port}", registry


@pytest.fixture
def publisher(tmp_path: Path) -> Iterator[tuple[str, Registry]]:
    server, address, registry = _serve(tmp_path / "pub")
    yield address, registry
    server.stop(0)


def _key(i: int) -> SigningKey:
    return SigningKey.from_seed(bytes([40 + i]) * 32)


def _boot_all(address: str, n: int = 4, **kw):  # type: ignore[no-untyped-def]
    results: dict[int, object] = {}

    def run(i: int) -> None:
        try:
            results[i] = bootstrap(
                publisher=address, node_id=i, key=_key(i), address=f"127.0.0.1:{51000 + i}", **kw
            )
        except Exception as exc:  # collected and asserted below
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


def test_every_node_gets_the_same_verified_genesis(publisher) -> None:  # type: ignore[no-untyped-def]
    address, registry = publisher
    results = _boot_all(address)
    hashes = {r.genesis.block_hash for r in results.values()}  # type: ignore[union-attr]
    assert hashes == {registry.genesis.block_hash}


def test_a_ledger_of_another_network_is_refused_with_what_to_do(publisher, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    address, _ = publisher
    other_server, other_address, _ = _serve(tmp_path / "other")
    try:
        other = _boot_all(other_address)
    finally:
        other_server.stop(0)
    theirs = other[0].genesis  # type: ignore[union-attr]
    results = _boot_all(address, expected_genesis=theirs)
    assert isinstance(results[0], WrongGenesis)
    assert "--data-dir" in str(results[0])


def test_an_unreachable_publisher_gives_up_after_capped_retries() -> None:
    port = free_range(1)
    sleeps: list[float] = []
    with pytest.raises(PublisherUnreachable, match="qbfl-publisher serve"):
        bootstrap(
            publisher=f"127.0.0.1:{port}",
            node_id=0,
            key=_key(0),
            address="127.0.0.1:51000",
            retries=4,
            sleep=sleeps.append,
        )
    assert sleeps == [0.5, 1.0, 2.0]


def test_an_id_outside_the_task_is_refused(publisher) -> None:  # type: ignore[no-untyped-def]
    address, _ = publisher
    with pytest.raises(WrongGenesis, match="outside this task"):
        bootstrap(publisher=address, node_id=9, key=_key(9), address="127.0.0.1:51009")


def test_waiting_for_other_nodes_gives_up_with_who_is_missing(publisher) -> None:  # type: ignore[no-untyped-def]
    address, _ = publisher
    clock = iter(range(0, 10_000, 5))
    with pytest.raises(PublisherUnreachable, match="1 of 4 nodes registered"):
        bootstrap(
            publisher=address,
            node_id=0,
            key=_key(0),
            address="127.0.0.1:51000",
            genesis_wait_s=20,
            sleep=lambda s: None,
            clock=lambda: float(next(clock)),
        )


def test_a_busy_publisher_is_retried(tmp_path: Path) -> None:
    """RESOURCE_EXHAUSTED (its concurrent-RPC limit full) is transient: back off and ask again."""
    import grpc

    spec = build_task(
        task="mnist", nodes=4, f=None, committee=3, rounds=3, qba="detectable", seed=0,
        aggregator="qbfl", round_timeout_s=10.0, dp=False,
    )  # fmt: skip
    registry = Registry(Workspace.create(tmp_path / "pub", spec)[0])
    busy = {"left": 2}

    class Busy(PublisherServicer):
        def GetTask(self, request, context):  # type: ignore[no-untyped-def]
            if busy["left"]:
                busy["left"] -= 1
                context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "Concurrent RPC limit exceeded!")
            return super().GetTask(request, context)

    server = grpc_server(4)
    publisher_pb2_grpc.add_PublisherServicer_to_server(Busy(registry), server)
    address = f"127.0.0.1:{server.add_insecure_port('127.0.0.1:0')}"
    server.start()
    try:
        waits: list[float] = []
        results = _boot_all(address, 4, sleep=waits.append)
        assert all(r.genesis.block_hash == registry.genesis.block_hash for r in results.values())  # type: ignore[union-attr]
        assert busy["left"] == 0 and 0.5 in waits
    finally:
        server.stop(0)
