"""Start a small real network for a test and tear it down (publisher + node processes on loopback)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from qbfl.crypto.signing import SigningKey, load_seed
from qbfl.ledger.genesis import GenesisBlock
from qbfl.node.roles import assign_roles, parse_malicious_spec
from qbfl.orchestrator.launch import UpConfig, _plan, _wait_for_genesis
from qbfl.orchestrator.local import LocalBackend, NetworkPlan
from qbfl.publisher.workspace import Workspace, build_task
from tests.e2e.ports import free_range


@dataclass
class LiveNetwork:
    plan: NetworkPlan
    backend: LocalBackend
    genesis: GenesisBlock
    out: Path

    def key(self, node_id: int) -> SigningKey:
        return SigningKey.from_seed(load_seed(Path(self.plan.node(node_id).data_dir) / "node.key"))

    def address(self, node_id: int) -> str:
        return self.plan.node(node_id).listen


@contextmanager
def live_network(
    out: Path,
    *,
    nodes: int,
    rounds: int,
    malicious: str = "",
    round_timeout_s: float = 8.0,
    linger_s: float = 2.0,
    metrics: bool = False,
) -> Iterator[LiveNetwork]:
    base = free_range(2 * nodes + 1)
    config = UpConfig(
        nodes=nodes,
        rounds=rounds,
        malicious=parse_malicious_spec(malicious),
        out=out,
        round_timeout_s=round_timeout_s,
        base_port=base,
        publisher_port=base + nodes,
        linger_s=linger_s,
        metrics_base_port=base + nodes + 1 if metrics else None,
    )
    spec = build_task(
        task="mnist",
        nodes=nodes,
        f=None,
        committee=min(5, nodes),
        rounds=rounds,
        qba="detectable",
        seed=0,
        aggregator="qbfl",
        round_timeout_s=round_timeout_s,
        dp=False,
    )
    (out / "logs").mkdir(parents=True, exist_ok=True)
    Workspace.create(out / "publisher", spec)
    plan = _plan(config, assign_roles(config.malicious, nodes, 0))
    backend = LocalBackend(plan, preload_task="mnist")
    try:
        backend.start_publisher(out / "publisher")
        for entry in plan.nodes:
            backend.start_node(entry.node_id)
        plan.save()
        genesis = _wait_for_genesis(plan.publisher_listen, 300.0)
        yield LiveNetwork(plan, backend, genesis, out)
    finally:
        backend.stop_all(grace_s=10.0)


def wait_until(predicate, timeout_s: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
