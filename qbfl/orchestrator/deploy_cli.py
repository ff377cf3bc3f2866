"""`qbfl-orchestrator compose` and `qbfl-orchestrator k8s`: write deployment files for a publisher and N nodes."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from qbfl.orchestrator.roles import DEFAULT_MALICIOUS_SPEC, NODE_ROLES, parse_malicious_spec
from qbfl.orchestrator.services import DEFAULT_IMAGE, NetworkSettings, TaskSettings

MALICIOUS_HELP = (
    "COUNT:ROLE[+ROLE...] groups, comma-separated (e.g. 10:labelflip,3:oppose,2:bitflip+oppose; "
    f"'none' for an honest network). Roles: {', '.join(NODE_ROLES)}. Which ids play them: the "
    "simulator's seeded choice for (nodes, total, seed), groups taking those ids in ascending order."
)


def _network_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """The task and node flags shared by `compose` and `k8s`."""
    options = [
        click.option("--nodes", type=click.IntRange(min=3), default=50, show_default=True),
        click.option(
            "--malicious", default=DEFAULT_MALICIOUS_SPEC, show_default=True, help=MALICIOUS_HELP
        ),
        click.option(
            "--task",
            type=click.Choice(["mnist", "fashion-mnist"]),
            default="mnist",
            show_default=True,
        ),
        click.option(
            "--seed",
            type=click.IntRange(min=0),
            default=0,
            show_default=True,
            help="task seed (also picks the malicious ids)",
        ),
        click.option(
            "--rounds", type=click.IntRange(min=1), default=None, help="publisher default"
        ),
        click.option("--committee", type=click.IntRange(min=1), default=None),
        click.option("--malicious-f", type=click.IntRange(min=0), default=None),
        click.option("--qba", type=click.Choice(["detectable", "paper"]), default=None),
        click.option("--aggregator", default=None),
        click.option("--round-timeout", type=click.FloatRange(min=0, min_open=True), default=None),
        click.option(
            "--device",
            type=click.Choice(["auto", "cpu", "cuda"]),
            default="auto",
            show_default=True,
        ),
        click.option("--dp", is_flag=True, help="nodes train with DP-SGD"),
        click.option("--log-format", type=click.Choice(["text", "json"]), default=None),
        click.option("--gpus", is_flag=True, help="reserve GPUs for the nodes (CUDA image)"),
    ]
    return functools.reduce(lambda f, option: option(f), reversed(options), func)


def _settings(
    *,
    nodes: int,
    malicious: str,
    task: str,
    seed: int,
    rounds: int | None,
    committee: int | None,
    malicious_f: int | None,
    qba: str | None,
    aggregator: str | None,
    round_timeout: float | None,
    device: str,
    dp: bool,
    log_format: str | None,
    gpus: bool,
    network: str = "bridge",
    base_port: int | None = None,
) -> NetworkSettings:
    try:
        groups = parse_malicious_spec(malicious)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--malicious") from exc
    try:
        return NetworkSettings(
            task=TaskSettings(
                task=task,
                nodes=nodes,
                seed=seed,
                rounds=rounds,
                committee=committee,
                malicious_f=malicious_f,
                qba=qba,
                aggregator=aggregator,
                round_timeout=round_timeout,
            ),
            malicious=groups,
            network=network,  # type: ignore[arg-type]
            base_port=base_port,
            device=device,
            dp=dp,
            log_format=log_format,
            gpus=gpus,
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc


@click.command(
    help=(
        "Write a docker-compose.yml for a publisher and N nodes. The committed top-level file is "
        "`qbfl-orchestrator compose --out docker-compose.yml` (all defaults); its header holds the "
        "exact command that regenerates it."
    )
)
@_network_options
@click.option(
    "--network",
    type=click.Choice(["bridge", "host"]),
    default="bridge",
    show_default=True,
    help="bridge: service names as addresses; host: loopback, one port per service",
)
@click.option(
    "--base-port",
    type=click.IntRange(min=1024, max=65535),
    default=None,
    help="publisher on P, node N on P+1+N (default: 50050 and 51000+N)",
)
@click.option(
    "--image", default=None, help="image tag (default qbfl:latest, qbfl:cuda with --gpus)"
)
@click.option("--no-build", is_flag=True, help="no build section: the image is built elsewhere")
@click.option("--project-name", default="qbfl", show_default=True)
@click.option(
    "--out",
    default="docker-compose.yml",
    show_default=True,
    help="file to write, or - for stdout",
)
def compose(
    network: str,
    base_port: int | None,
    image: str | None,
    no_build: bool,
    project_name: str,
    out: str,
    **flags: Any,
) -> None:
    from qbfl.orchestrator.compose import ComposeOptions, default_image, render_compose

    settings = _settings(network=network, base_port=base_port, **flags)
    options = ComposeOptions(
        image=image or default_image(settings),
        build=not no_build,
        project_name=project_name,
        out=out,
    )
    text = render_compose(settings, options)
    if out == "-":
        sys.stdout.write(text)
        return
    Path(out).write_text(text)
    roles = settings.roles
    click.echo(
        f"wrote {out}: publisher + {settings.task.nodes} nodes ({len(roles)} malicious), "
        f"{network} network; start with `docker compose -f {out} up`"
    )


@click.command(
    help=(
        "Write Kubernetes manifests (publisher Deployment + Service, node StatefulSet + headless "
        "Service, roles ConfigMap) into DIR, for `kubectl apply -f DIR/`."
    )
)
@_network_options
@click.option(
    "--image", default=DEFAULT_IMAGE, show_default=True, help="an image the cluster can pull"
)
@click.option("--storage-class", default=None, help="for the volumes (default: the cluster's)")
@click.option(
    "--out",
    default="k8s",
    show_default=True,
    help="directory to write, or - for all manifests on stdout",
)
def k8s(image: str, storage_class: str | None, out: str, **flags: Any) -> None:
    from qbfl.orchestrator.k8s import K8sOptions, render_k8s

    settings = _settings(**flags)
    files = render_k8s(settings, K8sOptions(image=image, storage_class=storage_class), out=out)
    if out == "-":  # one multi-document stream, for `kubectl apply -f -` or a single file
        sys.stdout.write("".join(files.values()))
        return
    directory = Path(out)
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (directory / name).write_text(text)
    click.echo(
        f"wrote {', '.join(str(directory / n) for n in files)}: publisher + "
        f"{settings.task.nodes} nodes ({len(settings.roles)} malicious); "
        f"apply with `kubectl apply -f {out}/`"
    )
