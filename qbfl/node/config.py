"""A node process's settings, their defaults and their checks (`qbfl-node start`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from qbfl.errors import ConfigError
from qbfl.node.roles import Roles

DEFAULT_PUBLISHER = "127.0.0.1:50050"
BASE_PORT = 51000  # node N listens on BASE_PORT + N unless --listen says otherwise
MAX_NODE_ID = 65535 - BASE_PORT


def default_listen(node_id: int, host: str = "127.0.0.1") -> str:
    return f"{host}:{BASE_PORT + node_id}"


def default_data_dir(node_id: int) -> Path:
    return Path("qbfl-data") / f"node-{node_id}"


def parse_address(value: str, what: str) -> tuple[str, int]:
    """HOST:PORT → (host, port); ConfigError naming the flag otherwise."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{what}: expected HOST:PORT, got {value!r}")
    return host, int(port)


@dataclass(frozen=True, kw_only=True)
class NodeConfig:
    """Everything `qbfl-node start` takes; defaults documented in docs/network.md."""

    node_id: int
    roles: Roles = Roles()
    publisher: str = DEFAULT_PUBLISHER
    listen: str | None = None  # None: 127.0.0.1:(51000 + id)
    advertise: str | None = None  # what peers dial; None: the listen address
    data_dir: Path | None = None  # None: qbfl-data/node-<id>
    device: str = "auto"
    dp: bool = False
    dp_accounting: str = "run"  # qbfl.learning.vectorized.DP_ACCOUNTING (no torch import here)
    log_format: str = "text"
    metrics_port: int | None = None
    eavesdrop: tuple[int, ...] = ()  # peers whose quantum channel with this node is tapped
    linger_s: float | None = None  # exit this long after the last block; None: serve until stopped
    publisher_retries: int = 8  # attempts (with capped backoff) before giving up on the publisher
    genesis_wait_s: float = 600.0  # how long to wait for the other nodes to register
    qkd: str = "bb84"
    dataset_dir: Path | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.node_id <= MAX_NODE_ID:
            raise ConfigError(f"--id must be in 0..{MAX_NODE_ID}, got {self.node_id}")
        parse_address(self.publisher, "--publisher")
        parse_address(self.listen_address, "--listen")
        parse_address(self.advertised_address, "--advertise")
        if self.dp_accounting not in ("run", "round"):
            raise ConfigError("--dp-accounting must be run or round")
        if self.dp_accounting != "run" and not self.dp:
            raise ConfigError("--dp-accounting needs --dp")
        if self.log_format not in ("text", "json"):
            raise ConfigError("--log-format must be text or json")
        if self.metrics_port is not None and not 0 <= self.metrics_port < 65536:
            raise ConfigError("--metrics-port must be a TCP port")
        if self.node_id in self.eavesdrop:
            raise ConfigError("--eavesdrop names a peer, not this node")
        if (
            (self.linger_s is not None and self.linger_s < 0)
            or self.genesis_wait_s <= 0
            or self.publisher_retries < 1
        ):
            raise ConfigError("linger must be >= 0, genesis wait > 0 and retries >= 1")
        if self.qkd not in ("bb84", "seeded"):
            raise ConfigError("--qkd must be bb84 or seeded")

    @property
    def listen_address(self) -> str:
        return self.listen or default_listen(self.node_id)

    @property
    def advertised_address(self) -> str:
        if self.advertise:
            return self.advertise
        host, port = parse_address(self.listen_address, "--listen")
        if host in ("0.0.0.0", "[::]", "::"):
            raise ConfigError(
                "--listen binds every interface: give --advertise HOST:PORT, the address peers dial"
            )
        return self.listen_address

    @property
    def directory(self) -> Path:
        return self.data_dir or default_data_dir(self.node_id)
