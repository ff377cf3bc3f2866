"""`qbfl-orchestrator up --backend docker`: the same network in containers, through the Docker SDK.

The containers are the ones `docker compose` runs (qbfl.orchestrator.services), with host
networking and a port per service (this machine has no bridge; on another engine the same specs
run on the default bridge through compose). The live display, the stall check and summary.json
are the local backend's (launch.follow); `down`, `status` and `perturb` find the containers by the
project recorded in OUT/network.json.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from qbfl.errors import ConfigError
from qbfl.node.config import BASE_PORT
from qbfl.node.roles import Roles, assign_roles, describe
from qbfl.orchestrator.docker_backend import DockerNetwork
from qbfl.orchestrator.docker_image import ImageBuild, host_extra_cas
from qbfl.orchestrator.launch import (
    LiveDisplay,
    UpConfig,
    _raise_interrupt,
    _write_results,
    follow,
)
from qbfl.orchestrator.local import NetworkPlan, NodeEntry, locked
from qbfl.orchestrator.memory import PeakMemory
from qbfl.orchestrator.roles import parse_malicious_spec
from qbfl.orchestrator.services import (
    DATA_ROOT,
    DEFAULT_IMAGE,
    NetworkSettings,
    TaskSettings,
    plan_network,
)

PUBLISHER_START_S = 300.0


def project_name(out: Path) -> str:
    """A project name unique to OUT (other sessions may share the engine's /var/lib/docker)."""
    stem = re.sub(r"[^a-z0-9]+", "-", out.resolve().name.lower()).strip("-") or "net"
    return f"qbfl-{stem}-{hashlib.sha1(str(out.resolve()).encode()).hexdigest()[:8]}"


def _settings(config: UpConfig) -> NetworkSettings:
    spec = ",".join(f"{g.count}:{g.roles.label}" for g in config.malicious) or "none"
    return NetworkSettings(
        task=TaskSettings(
            task=config.task,
            nodes=config.nodes,
            seed=config.seed,
            rounds=config.rounds,
            committee=config.committee,
            malicious_f=config.f,
            qba=config.qba,
            aggregator=config.aggregator,
            round_timeout=config.round_timeout_s,
        ),
        malicious=parse_malicious_spec(spec),
        network="host",
        base_port=config.publisher_port,  # publisher P, node N on P + 1 + N
        device="cpu",
    )


def _plan(config: UpConfig, settings: NetworkSettings, project: str, image: str) -> NetworkPlan:
    roles = assign_roles(config.malicious, config.nodes, config.seed)
    out = config.out.resolve()
    return NetworkPlan(
        out=str(out),
        task=config.task,
        publisher_listen=f"127.0.0.1:{settings.publisher_port()}",
        qkd=config.qkd,
        nodes=[
            NodeEntry(
                node_id=i,
                role=roles.get(i, Roles()).label,
                listen=f"127.0.0.1:{settings.node_port(i)}",
                data_dir=f"{DATA_ROOT}/node-{i}",  # inside the container, on its volume
                log=f"docker logs {project}-node-{i}",
            )
            for i in range(config.nodes)
        ],
        backend="docker",
        project=project,
        image=image,
    )


def refuse_local_only(config: UpConfig) -> None:
    """`up` options the docker backend cannot honour fail here, before any engine call, instead
    of running a network other than the one asked for."""
    local_only = [
        flag
        for flag, used in (
            ("--eavesdrop", bool(config.eavesdrop)),
            ("--qkd seeded", config.qkd != "bb84"),
            ("--base-port", config.base_port != BASE_PORT),
            ("--resume", config.resume),
        )
        if used
    ]
    if local_only:
        raise ConfigError(
            f"{', '.join(local_only)}: local backend only (containers run BB84 on untapped links, "
            "node N listens on --publisher-port + 1 + N, and every `up --backend docker` starts a "
            "fresh network)"
        )


def run_up_docker(
    config: UpConfig,
    *,
    image: str = DEFAULT_IMAGE,
    base_image: str | None = None,
    wheel_dir: Path | None = None,
    stream: TextIO = sys.stdout,
) -> dict[str, Any]:
    """Build (or reuse) the image, start publisher and nodes as containers, follow, stop them."""
    refuse_local_only(config)
    out = config.out.resolve()
    if (out / "network.json").exists():
        raise ConfigError(
            f"{out} holds a network from an earlier `up`: pass another --out, or run "
            f"`qbfl-orchestrator down --out {config.out}` first (--resume is local-backend only)"
        )
    out.mkdir(parents=True, exist_ok=True)
    settings = _settings(config)
    project = project_name(out)
    net = DockerNetwork(project, image=image)
    display = LiveDisplay(stream)
    if leftovers := net.down(volumes=True):
        # The --out that recorded them is gone (checked above), so nothing can reach them any
        # more; their volumes hold ledgers of another genesis, which a new node must not load.
        display.log(
            f"removed {len(leftovers)} leftovers of an earlier {project}: {leftovers[0]}, …"
        )
    if not net.image_exists():
        display.log(f"building image {image} (base {base_image or 'the Dockerfile default'})")
        net.ensure_image(
            ImageBuild(
                tag=image,
                context=Path(__file__).resolve().parents[2],
                base_image=base_image,
                wheel_dir=wheel_dir,
                extra_ca=host_extra_cas(),
                torch_index_url="" if wheel_dir is not None else None,
            ),
            on_log=lambda line: None,
        )
    plan = _plan(config, settings, project, image)
    roles = assign_roles(config.malicious, config.nodes, config.seed)
    display.log(
        f"starting {config.nodes} node containers (malicious: {describe(roles)}) and a publisher "
        f"(project {project}, image {image}, host network)"
    )
    sampler = PeakMemory(net.memory_all)
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        with locked(out):
            plan.orchestrator_pid = os.getpid()
            plan.save()
        specs = plan_network(settings)
        # As compose's `depends_on: service_healthy`: nodes give up on a publisher that does not
        # answer within their retries, and 50 containers starting at once slow its start a lot.
        net.start([s for s in specs if s.is_publisher])
        net.wait_healthy("publisher", timeout=PUBLISHER_START_S)
        net.start([s for s in specs if not s.is_publisher])
        sampler.start()

        def stop() -> dict[int, int | None]:
            sampler.finish()
            return _stop(net)

        summary = follow(config, plan, display, stop=stop)
        summary.update(
            backend="docker",
            project=project,
            image=image,
            malicious=describe(roles),
            memory_peak=sampler.peak,
        )
        _write_results(out, summary, summary["phases_per_round"], config)
        return summary
    finally:
        sampler.finish()
        _stop(net)
        signal.signal(signal.SIGTERM, previous)


def _stop(net: DockerNetwork) -> dict[int, int | None]:
    """Stop every container of the project (volumes stay for `down`); exit codes by node id."""
    codes: dict[int, int | None] = {}
    for container in net.containers():
        try:
            container.reload()
            if container.status == "paused":
                container.unpause()
            if container.status in ("running", "restarting"):
                container.stop(timeout=15)
            container.reload()
            node = container.labels.get("qbfl.node-id")
            if node is not None:
                codes[int(node)] = container.attrs["State"].get("ExitCode")
        except Exception:  # a container removed meanwhile: nothing to stop
            continue
    return codes


def perturb_container(plan: NetworkPlan, node_id: int, action: str, seconds: float) -> str:
    """kill / pause / restart / disconnect on the node's container (docs/network.md §8)."""
    assert plan.project is not None and plan.image is not None
    net = DockerNetwork(plan.project, image=plan.image)
    service = f"node-{node_id}"
    plan.node(node_id)  # an unknown id fails with the valid range
    if action == "kill":
        net.kill(service)
        time.sleep(seconds)
        net.start_again(service)
        return f"{service} killed (SIGKILL) and started again from its volume"
    if action == "pause":
        net.pause(service)
        time.sleep(seconds)
        net.unpause(service)
        return f"{service} paused for {seconds:g} s, then resumed"
    if action == "restart":
        net.restart(service)
        return f"{service} restarted (SIGTERM, then started again)"
    if action == "disconnect":
        code, output = net.exec(
            service,
            ["sh", "-c", f"echo {seconds} > {DATA_ROOT}/{service}/disconnect-seconds"],
        )
        if code != 0:
            from qbfl.errors import QbflError

            raise QbflError(f"{service}: could not arm the disconnect: {output.strip()}")
        net.kill(service, signal="SIGUSR1")  # init forwards it to qbfl-node
        return f"{service} drops all peer traffic for {seconds:g} s"
    raise ConfigError(f"unknown perturbation {action!r}; use kill, pause, restart or disconnect")


def down_containers(plan: NetworkPlan) -> list[str]:
    """Stop a running `up` (if any), then remove the project's containers and volumes."""
    from qbfl.orchestrator.local import alive

    pid = plan.orchestrator_pid
    if alive(pid) and pid != os.getpid():
        assert pid is not None
        os.kill(pid, signal.SIGTERM)
    assert plan.project is not None and plan.image is not None
    return DockerNetwork(plan.project, image=plan.image).down(volumes=True)
