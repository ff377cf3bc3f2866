"""The container plan of a network: one publisher and N node services, shared by compose and the Docker backend.

A `ServiceSpec` is what one container runs — its command (the literal argv the container receives),
environment, labels and the named volume mounted at the image's data directory. `plan_network`
derives all of them from `NetworkSettings`; `compose.py` renders them as YAML and
`docker_backend.py` starts them through the Docker SDK, so both run the same commands.

Addresses: on a bridge network every service is reachable by its name (`publisher:50050`,
`node-7:51007`) and listens on 0.0.0.0 inside its own network namespace; with host networking all
services share the host's loopback, so they listen on 127.0.0.1 and need distinct ports. Ports:
the CLI defaults (publisher 50050, node N 51000+N) unless a base port P is given, then the
publisher takes P and node N takes P+1+N.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from qbfl.orchestrator.roles import RoleGroup, assign_roles, format_malicious_spec, role_label

NetworkKind = Literal["bridge", "host"]

# Inside the image (Dockerfile): the non-root user's home and the mount point of each volume.
DATA_ROOT = "/var/lib/qbfl"
PUBLISHER_PORT = 50050
NODE_PORT_BASE = 51000
DEFAULT_IMAGE = "qbfl:latest"

# Labels every container carries, so tools (the CI script, the Docker backend's `down`) find them.
LABEL_PROJECT = "qbfl.project"
LABEL_SERVICE = "qbfl.service"
LABEL_NODE_ID = "qbfl.node-id"
LABEL_ROLES = "qbfl.roles"
LABEL_ADDRESS = "qbfl.address"  # the service's gRPC address as seen from inside its own container

# Publisher settings a compose user may override from the environment or an .env file without
# regenerating (docs/containers.md); the generated values are the defaults.
PUBLISHER_ENV_KNOBS = ("QBFL_TASK", "QBFL_ROUNDS", "QBFL_INIT_ARGS")


@dataclass(frozen=True)
class TaskSettings:
    """The flags of `qbfl-publisher init` (None = the publisher's own default)."""

    task: str = "mnist"
    nodes: int = 50
    seed: int = 0
    rounds: int | None = None
    committee: int | None = None
    malicious_f: int | None = None
    qba: str | None = None
    aggregator: str | None = None
    round_timeout: float | None = None

    def __post_init__(self) -> None:
        if self.task not in ("mnist", "fashion-mnist"):
            raise ValueError(f"unknown task {self.task!r}; valid: mnist, fashion-mnist")
        if self.nodes < 3:
            raise ValueError(f"a network needs at least 3 nodes, got {self.nodes}")
        if self.seed < 0:
            raise ValueError("seed must be >= 0")
        if self.rounds is not None and self.rounds < 1:
            raise ValueError("rounds must be >= 1")
        if self.committee is not None and not 1 <= self.committee <= self.nodes:
            raise ValueError(f"committee must be in [1, nodes={self.nodes}], got {self.committee}")
        if self.malicious_f is not None and not 0 <= self.malicious_f < self.nodes:
            raise ValueError(f"malicious-f must be in [0, nodes), got {self.malicious_f}")
        if self.qba is not None and self.qba not in ("detectable", "paper"):
            raise ValueError(f"qba must be detectable or paper, got {self.qba!r}")
        if self.round_timeout is not None and self.round_timeout <= 0:
            raise ValueError("round-timeout must be > 0")

    def fixed_init_args(self) -> list[str]:
        """The init flags other than --task and --rounds (those two come from the environment)."""
        args = ["--nodes", str(self.nodes), "--seed", str(self.seed)]
        if self.committee is not None:
            args += ["--committee", str(self.committee)]
        if self.malicious_f is not None:
            args += ["--malicious-f", str(self.malicious_f)]
        if self.qba is not None:
            args += ["--qba", self.qba]
        if self.aggregator is not None:
            args += ["--aggregator", self.aggregator]
        if self.round_timeout is not None:
            args += ["--round-timeout", f"{self.round_timeout:g}"]
        return args


@dataclass(frozen=True)
class NetworkSettings:
    """Everything that decides the containers of one network."""

    task: TaskSettings = field(default_factory=TaskSettings)
    malicious: tuple[RoleGroup, ...] = ()
    network: NetworkKind = "bridge"
    base_port: int | None = None
    device: str = "auto"
    dp: bool = False
    log_format: str | None = None
    gpus: bool = False

    def __post_init__(self) -> None:
        if self.network not in ("bridge", "host"):
            raise ValueError(f"network must be bridge or host, got {self.network!r}")
        if self.base_port is not None and not 1024 <= self.base_port <= 65535 - self.task.nodes - 1:
            raise ValueError(
                f"base port {self.base_port} leaves no room for the publisher and "
                f"{self.task.nodes} nodes below 65536 (use 1024..{65534 - self.task.nodes})"
            )
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be auto, cpu or cuda, got {self.device!r}")
        if self.log_format not in (None, "text", "json"):
            raise ValueError(f"log format must be text or json, got {self.log_format!r}")
        # Validates counts against the number of nodes.
        assign_roles(self.task.nodes, self.malicious, seed=self.task.seed)

    @property
    def roles(self) -> Mapping[int, tuple[str, ...]]:
        return assign_roles(self.task.nodes, self.malicious, seed=self.task.seed)

    def publisher_port(self) -> int:
        return PUBLISHER_PORT if self.base_port is None else self.base_port

    def node_port(self, node_id: int) -> int:
        return NODE_PORT_BASE + node_id if self.base_port is None else self.base_port + 1 + node_id

    def service_host(self, service: str) -> str:
        return "127.0.0.1" if self.network == "host" else service

    def listen_host(self) -> str:
        return "127.0.0.1" if self.network == "host" else "0.0.0.0"


@dataclass(frozen=True)
class ServiceSpec:
    """One container: what it runs, with which environment, labels and volume."""

    name: str
    command: tuple[str, ...]
    environment: Mapping[str, str]
    labels: Mapping[str, str]
    volume: str  # named volume mounted at DATA_ROOT
    health_command: tuple[str, ...]  # exit 0 iff the service answers SERVING
    grpc_port: int
    node_id: int | None = None
    roles: tuple[str, ...] = ()
    gpu: bool = False

    @property
    def is_publisher(self) -> bool:
        return self.node_id is None


def settings_flags(settings: NetworkSettings) -> list[str]:
    """The generator flags that reproduce `settings` (defaults left out, except nodes and roles)."""
    task = settings.task
    words = [f"--nodes {task.nodes}", f"--malicious {format_malicious_spec(settings.malicious)}"]
    if task.task != "mnist":
        words.append(f"--task {task.task}")
    if task.seed != 0:
        words.append(f"--seed {task.seed}")
    for flag, value in (
        ("--rounds", task.rounds),
        ("--committee", task.committee),
        ("--malicious-f", task.malicious_f),
        ("--qba", task.qba),
        ("--aggregator", task.aggregator),
        ("--round-timeout", None if task.round_timeout is None else f"{task.round_timeout:g}"),
        ("--log-format", settings.log_format),
    ):
        if value is not None:
            words.append(f"{flag} {value}")
    if settings.device != "auto":
        words.append(f"--device {settings.device}")
    if settings.dp:
        words.append("--dp")
    if settings.gpus:
        words.append("--gpus")
    return words


def publisher_spec(settings: NetworkSettings) -> ServiceSpec:
    port = settings.publisher_port()
    listen = f"{settings.listen_host()}:{port}"
    out = f"{DATA_ROOT}/publisher"
    # init is idempotent (same settings → "already initialised", exit 0), so a restarted
    # container goes straight on to serve; different settings stop it with a message.
    fixed = " ".join(shlex.quote(a) for a in settings.task.fixed_init_args())
    script = (
        'qbfl-publisher init --task "$QBFL_TASK" ${QBFL_ROUNDS:+--rounds "$QBFL_ROUNDS"} '
        f"{fixed} $QBFL_INIT_ARGS --out {out} && "
        f"exec qbfl-publisher serve --dir {out} --listen {listen}"
    )
    rounds = settings.task.rounds
    return ServiceSpec(
        name="publisher",
        command=("sh", "-c", script),
        environment={
            "QBFL_TASK": settings.task.task,
            "QBFL_ROUNDS": "" if rounds is None else str(rounds),
            "QBFL_INIT_ARGS": "",
            "QBFL_HEALTH_ADDRESS": f"127.0.0.1:{port}",
        },
        labels={
            LABEL_SERVICE: "publisher",
            LABEL_ADDRESS: f"127.0.0.1:{port}",
        },
        volume="publisher",
        health_command=("qbfl-publisher", "health", "--quiet"),
        grpc_port=port,
    )


def node_spec(settings: NetworkSettings, node_id: int) -> ServiceSpec:
    if not 0 <= node_id < settings.task.nodes:
        raise ValueError(f"node id {node_id} outside 0..{settings.task.nodes - 1}")
    name = f"node-{node_id}"
    port = settings.node_port(node_id)
    roles = settings.roles.get(node_id, ())
    command = ["qbfl-node", "start", "--id", str(node_id)]
    for role in roles:
        command += ["--malicious", role]
    command += [
        "--publisher",
        f"{settings.service_host('publisher')}:{settings.publisher_port()}",
        "--listen",
        f"{settings.listen_host()}:{port}",
        "--advertise",
        f"{settings.service_host(name)}:{port}",
        "--data-dir",
        f"{DATA_ROOT}/{name}",
        "--device",
        settings.device,
    ]
    if settings.dp:
        command.append("--dp")
    if settings.log_format is not None:
        command += ["--log-format", settings.log_format]
    return ServiceSpec(
        name=name,
        command=tuple(command),
        environment={"QBFL_HEALTH_ADDRESS": f"127.0.0.1:{port}"},
        labels={
            LABEL_SERVICE: "node",
            LABEL_NODE_ID: str(node_id),
            LABEL_ROLES: role_label(roles),
            LABEL_ADDRESS: f"127.0.0.1:{port}",
        },
        volume=name,
        health_command=("qbfl-node", "health", "--quiet"),
        grpc_port=port,
        node_id=node_id,
        roles=roles,
        gpu=settings.gpus,
    )


def plan_network(settings: NetworkSettings) -> tuple[ServiceSpec, ...]:
    """The publisher, then nodes 0..N-1."""
    return (publisher_spec(settings),) + tuple(
        node_spec(settings, i) for i in range(settings.task.nodes)
    )
