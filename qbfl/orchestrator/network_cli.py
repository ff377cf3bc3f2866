"""qbfl-orchestrator up / down / status / perturb / wait: a networked run on this machine."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from qbfl.errors import ConfigError
from qbfl.node.config import BASE_PORT
from qbfl.node.roles import RoleGroup, parse_malicious_spec
from qbfl.orchestrator.services import DEFAULT_IMAGE

DEFAULT_OUT = Path("run") / "network"


class MaliciousSpec(click.ParamType):
    """`20:labelflip,5:oppose,2:random+byzantine` (COUNT:ROLE[+ROLE], comma-separated)."""

    name = "COUNT:ROLE,…"

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> object:
        if isinstance(value, tuple):
            return value
        try:
            return parse_malicious_spec(str(value))
        except ConfigError as exc:
            self.fail(str(exc), param, ctx)


class MaliciousArg(MaliciousSpec):
    """The simulator's `--malicious`: a plain count (the role comes from --attack) or a spec."""

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> object:
        if isinstance(value, int | tuple):
            return value
        text = str(value).strip()
        if text.isdigit():
            return int(text)
        return super().convert(text, param, ctx)


def model_only(groups: tuple[RoleGroup, ...]) -> tuple[int, str]:
    """(count, attack) for the plain simulator, which has one model attack and no consensus."""
    attacks = {g.roles.model for g in groups}
    if any(g.roles.consensus for g in groups) or len(attacks) != 1 or None in attacks:
        raise click.UsageError(
            "the plain simulator takes one model attack (e.g. --malicious 15:bitflip); "
            "consensus roles and mixes need --consensus"
        )
    return sum(g.count for g in groups), str(attacks.pop())


class LinkList(click.ParamType):
    """`3-7,0-12`: pairs of node ids."""

    name = "A-B,…"

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> object:
        if isinstance(value, tuple):
            return value
        pairs = []
        for item in str(value).split(","):
            a, sep, b = item.strip().partition("-")
            if not sep or not a.isdigit() or not b.isdigit():
                self.fail(f"{item!r} is not a link A-B of two node ids", param, ctx)
            pairs.append((int(a), int(b)))
        return tuple(pairs)


@click.command(help="Start a publisher and N node processes on 127.0.0.1 and follow them live.")
@click.option(
    "--backend", type=click.Choice(["local", "docker"]), default="local", show_default=True
)
@click.option("--nodes", type=click.IntRange(min=3), default=50, show_default=True)
@click.option("--malicious", type=MaliciousSpec(), default="", help="e.g. 20:labelflip,5:oppose")
@click.option(
    "--task", type=click.Choice(["mnist", "fashion-mnist"]), default="mnist", show_default=True
)
@click.option("--rounds", type=click.IntRange(min=1), default=10, show_default=True)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_OUT,
    show_default=True,
)
@click.option(
    "--eavesdrop",
    type=LinkList(),
    default=None,
    help="Tap these links' quantum channels, e.g. 3-7.",
)
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--aggregator", default="qbfl", show_default=True)
@click.option(
    "--committee", type=click.IntRange(min=3), default=None, help="[default: 5, or --nodes]"
)
@click.option("--f", "f", type=click.IntRange(min=0), default=None, help="[default: ⌊0.4·nodes⌋]")
@click.option(
    "--qba", type=click.Choice(["detectable", "paper"]), default="detectable", show_default=True
)
@click.option("--qkd", type=click.Choice(["bb84", "seeded"]), default="bb84", show_default=True)
@click.option("--round-timeout", type=click.FloatRange(min=1.0), default=60.0, show_default=True)
@click.option(
    "--stall",
    type=click.FloatRange(min=1.0),
    default=None,
    help="Fail after this many seconds without a block [default: 3 round timeouts].",
)
@click.option("--base-port", type=click.IntRange(1024, 65000), default=BASE_PORT, show_default=True)
@click.option(
    "--publisher-port", type=click.IntRange(1024, 65535), default=50050, show_default=True
)
@click.option(
    "--resume", is_flag=True, help="Continue the network already in --out (its keys and ledgers)."
)
@click.option(
    "--image",
    default=DEFAULT_IMAGE,
    show_default=True,
    help="--backend docker: the image to run (built from the Dockerfile when missing).",
)
@click.option(
    "--base-image", default=None, help="--backend docker: BASE_IMAGE build argument when building."
)
@click.option(
    "--wheel-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="--backend docker: local wheels served on loopback while building (offline machines).",
)
def up(
    backend: str,
    nodes: int,
    malicious: tuple[RoleGroup, ...],
    task: str,
    rounds: int,
    out: Path,
    eavesdrop: tuple[tuple[int, int], ...] | None,
    seed: int,
    aggregator: str,
    committee: int | None,
    f: int | None,
    qba: str,
    qkd: str,
    round_timeout: float,
    stall: float | None,
    base_port: int,
    publisher_port: int,
    resume: bool,
    image: str,
    base_image: str | None,
    wheel_dir: Path | None,
) -> None:
    from qbfl.orchestrator.launch import UpConfig, run_up

    config = UpConfig(
        task=task,
        nodes=nodes,
        malicious=malicious,
        rounds=rounds,
        out=out,
        seed=seed,
        aggregator=aggregator,
        committee=committee,
        f=f,
        qba=qba,
        round_timeout_s=round_timeout,
        eavesdrop=eavesdrop or (),
        qkd=qkd,
        base_port=base_port,
        publisher_port=publisher_port,
        stall_s=stall,
        resume=resume,
    )
    if backend == "docker":
        from qbfl.orchestrator.docker_launch import run_up_docker

        summary = run_up_docker(config, image=image, base_image=base_image, wheel_dir=wheel_dir)
    else:
        summary = run_up(config)
    sys.exit(0 if summary.get("honest_heads_agree") else 1)


@click.command(help="Stop every process of the network started with --out.")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_OUT,
    show_default=True,
)
def down(out: Path) -> None:
    from qbfl.orchestrator.launch import stop_network
    from qbfl.orchestrator.local import NetworkPlan

    if NetworkPlan.load(out).backend == "docker":
        from qbfl.orchestrator.docker_launch import down_containers

        removed = down_containers(NetworkPlan.load(out))
        click.echo(f"removed {len(removed)} container(s) and volume(s)")
        return
    stopped = stop_network(out)
    click.echo(
        f"stopped {len(stopped)} process(es)" + (f": {', '.join(stopped)}" if stopped else "")
    )


@click.command(help="Each node's height, head hash, round, view, stake and role.")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_OUT,
    show_default=True,
)
@click.option("--json", "as_json", is_flag=True)
def status(out: Path, as_json: bool) -> None:
    from qbfl.orchestrator.local import NetworkPlan, node_statuses

    plan = NetworkPlan.load(out)
    statuses = node_statuses(plan)
    if as_json:
        click.echo(json.dumps(statuses, sort_keys=True))
        return
    click.echo(
        f"{'node':>4}  {'role':<18} {'height':>6} {'round':>5} {'view':>4} {'stake':>5}  head"
    )
    for node_id, s in sorted(statuses.items()):
        if "error" in s:
            click.echo(f"{node_id:>4}  {s.get('role', '?'):<18} down ({s['error'][:60]})")
            continue
        click.echo(
            f"{node_id:>4}  {s['role']:<18} {s['height']:>6} {s['round']:>5} {s['view']:>4} "
            f"{s['stake']:>5}  {s['head_hash'][:16]}…"
            + ("  catching up" if s.get("catching_up") else "")
        )


@click.command(help="Kill, pause, restart or disconnect one node of a running network.")
@click.argument("node", type=click.IntRange(min=0))
@click.argument("action", type=click.Choice(["kill", "pause", "restart", "disconnect"]))
@click.option(
    "--for",
    "seconds",
    type=click.FloatRange(min=0),
    default=5.0,
    show_default=True,
    help="Pause/disconnect length; delay before a killed node starts again.",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_OUT,
    show_default=True,
)
def perturb(node: int, action: str, seconds: float, out: Path) -> None:
    from qbfl.orchestrator.local import LocalBackend, NetworkPlan, locked

    with locked(out):
        plan = NetworkPlan.load(out)
    if plan.backend == "docker":
        from qbfl.orchestrator.docker_launch import perturb_container

        click.echo(perturb_container(plan, node, action, seconds))
        return
    backend = LocalBackend(plan)
    message = backend.perturb(node, action, seconds, forkserver=False)
    with locked(out):
        fresh = NetworkPlan.load(out)
        fresh.node(node).pid = plan.node(node).pid
        fresh.save()
    click.echo(message)


@click.command(help="Wait until every honest node reached --height; fail if the chain stalls.")
@click.option("--height", type=click.IntRange(min=1), required=True)
@click.option("--stall", type=click.FloatRange(min=1.0), default=180.0, show_default=True)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_OUT,
    show_default=True,
)
def wait(height: int, stall: float, out: Path) -> None:
    from qbfl.orchestrator.launch import wait_for_height

    heights = wait_for_height(out, height, stall_s=stall, echo=click.echo)
    click.echo(f"every honest node is at height ≥ {height}: {dict(sorted(heights.items()))}")


COMMANDS = (up, down, status, perturb, wait)
