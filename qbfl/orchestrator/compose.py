"""`qbfl-orchestrator compose`: a docker-compose.yml for a publisher and N nodes, byte-for-byte deterministic.

The services come from `services.plan_network`, the same plan the Docker backend starts. One image
serves them all: the publisher carries the `build:` section and every node names the same `image:`
tag, so `docker compose up` builds once, not N+1 times. Shared node settings sit in one anchored
block (`x-qbfl-node`) that each node merges; each node block holds only what differs (command,
health address, labels, volume).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from qbfl.orchestrator.roles import role_label
from qbfl.orchestrator.services import (
    DATA_ROOT,
    DEFAULT_IMAGE,
    PUBLISHER_ENV_KNOBS,
    NetworkSettings,
    ServiceSpec,
    plan_network,
    settings_flags,
)
from qbfl.orchestrator.yaml_writer import MERGE_KEY, Alias, Anchored, Flow, Spaced, dump_yaml

DEFAULT_BASE_IMAGE = "python:3.11-slim-bookworm"
DEFAULT_CUDA_IMAGE = "qbfl:cuda"
NODE_ANCHOR = "qbfl-node"


@dataclass(frozen=True)
class ComposeOptions:
    """How the file names and builds its image."""

    image: str = DEFAULT_IMAGE
    build: bool = True  # False: the image is built elsewhere (CI); no build section
    project_name: str = "qbfl"
    out: str = "docker-compose.yml"  # only for the header's regeneration command


def _escape(value: str) -> str:
    """A literal value for compose: `$` would start an interpolation, `$$` is one dollar."""
    return value.replace("$", "$$")


def _environment(spec: ServiceSpec) -> dict[str, str]:
    # The publisher's knobs stay overridable from the shell or an .env file: ${KEY:-default}.
    return {
        key: f"${{{key}:-{_escape(value)}}}" if key in PUBLISHER_ENV_KNOBS else _escape(value)
        for key, value in spec.environment.items()
    }


def _gpu_deploy() -> dict[str, Any]:
    device = {"driver": "nvidia", "count": "all", "capabilities": Flow(["gpu"])}
    return {"resources": {"reservations": {"devices": [device]}}}


def regenerate_command(settings: NetworkSettings, options: ComposeOptions) -> str:
    """The canonical command line that regenerates this exact file."""
    words = ["qbfl-orchestrator compose", *settings_flags(settings)]
    if settings.network != "bridge":
        words.append(f"--network {settings.network}")
    if settings.base_port is not None:
        words.append(f"--base-port {settings.base_port}")
    if options.image != default_image(settings):
        words.append(f"--image {options.image}")
    if not options.build:
        words.append("--no-build")
    if options.project_name != "qbfl":
        words.append(f"--project-name {options.project_name}")
    words.append(f"--out {options.out}")
    return " ".join(words)


def default_image(settings: NetworkSettings) -> str:
    return DEFAULT_CUDA_IMAGE if settings.gpus else DEFAULT_IMAGE


def _header(settings: NetworkSettings, options: ComposeOptions) -> str:
    roles = settings.roles
    malicious = ", ".join(f"node-{i} {role_label(r)}" for i, r in sorted(roles.items())) or "none"
    network = (
        "the default bridge network; services reach each other by name"
        if settings.network == "bridge"
        else "host networking; every service on its own loopback port"
    )
    return "\n".join(
        [
            "QBFL network: a publisher and "
            f"{settings.task.nodes} nodes ({settings.task.task}), {network}.",
            "Generated; do not edit by hand. Regenerate (roles, counts, ports) with:",
            f"  {regenerate_command(settings, options)}",
            f"Malicious ({len(roles)}): {malicious}.",
            "Without regenerating, set in the environment or an .env file beside this file: "
            "QBFL_IMAGE (image tag),",
            "QBFL_TASK, QBFL_ROUNDS, QBFL_INIT_ARGS (extra `qbfl-publisher init` flags); "
            "changed task settings need",
            "fresh volumes: `docker compose down -v`. Progress: `docker compose logs -f publisher`. "
            "See docs/containers.md.",
        ]
    )


def compose_document(settings: NetworkSettings, options: ComposeOptions) -> dict[str, Any]:
    """The compose file as plain data (mappings in output order)."""
    specs = plan_network(settings)
    publisher, nodes = specs[0], specs[1:]
    host = settings.network == "host"
    image = f"${{QBFL_IMAGE:-{options.image}}}"

    node_common: dict[str, Any] = {"image": image, "init": True}
    if host:
        node_common["network_mode"] = "host"
    node_common["depends_on"] = {"publisher": {"condition": "service_healthy"}}
    node_common["healthcheck"] = {
        "test": Flow(["CMD", *nodes[0].health_command]),
        "interval": "30s",
        "timeout": "10s",
        "retries": 3,
        # Health stays NOT_SERVING until genesis is verified, i.e. until all N nodes registered.
        "start_period": "600s",
    }
    node_common["stop_grace_period"] = "30s"
    if settings.gpus:
        node_common["deploy"] = _gpu_deploy()

    services: dict[str, Any] = {}
    pub: dict[str, Any] = {}
    if options.build:
        build: dict[str, Any] = {"context": ".", "dockerfile": "Dockerfile"}
        if host:
            build["network"] = "host"
        build["args"] = {
            "BASE_IMAGE": f"${{QBFL_BASE_IMAGE:-{DEFAULT_BASE_IMAGE}}}",
            "TORCH": "cuda" if settings.gpus else "cpu",
            "WHEELS_URL": "${QBFL_WHEELS_URL:-}",
        }
        pub["build"] = build
    pub["image"] = image
    pub["init"] = True
    if host:
        pub["network_mode"] = "host"
    pub["command"] = Flow([_escape(word) for word in publisher.command])
    pub["environment"] = _environment(publisher)
    pub["labels"] = dict(publisher.labels)
    pub["volumes"] = Flow([f"{publisher.volume}:{DATA_ROOT}"])
    pub["healthcheck"] = {
        "test": Flow(["CMD", *publisher.health_command]),
        # Nodes wait for this: short interval, so they start soon after the publisher is ready.
        "interval": "5s",
        "timeout": "5s",
        "retries": 3,
        "start_period": "300s",
    }
    pub["stop_grace_period"] = "30s"
    services["publisher"] = pub

    for spec in nodes:
        services[spec.name] = {
            MERGE_KEY: Alias(NODE_ANCHOR),
            "command": Flow([_escape(word) for word in spec.command]),
            "environment": _environment(spec),
            "labels": dict(spec.labels),
            "volumes": Flow([f"{spec.volume}:{DATA_ROOT}"]),
        }

    volumes: dict[str, Any] = {spec.volume: {} for spec in specs}
    return {
        "name": options.project_name,
        f"x-{NODE_ANCHOR}": Anchored(NODE_ANCHOR, node_common),
        "services": Spaced(services),
        "volumes": volumes,
    }


def render_compose(settings: NetworkSettings, options: ComposeOptions | None = None) -> str:
    """The docker-compose.yml text for `settings`."""
    options = options or ComposeOptions(image=default_image(settings))
    return dump_yaml(compose_document(settings, options), comment=_header(settings, options))
