"""qbfl-node: run one QBFL node process, or ask a running one for its status."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from qbfl.command_line import QbflGroup
from qbfl.node.config import BASE_PORT, DEFAULT_PUBLISHER, NodeConfig
from qbfl.node.health_cli import health
from qbfl.node.roles import ROLES, parse_roles


@click.group(cls=QbflGroup, help="Run one QBFL node.")
def main() -> None:
    pass


@main.command(
    help="Start node ID: register with the publisher, verify the genesis, run the rounds."
)
@click.option(
    "--id", "node_id", type=click.IntRange(min=0), required=True, help="Node id in the roster."
)
@click.option(
    "--malicious",
    multiple=True,
    metavar="ROLE[+ROLE]",
    help=f"Malicious role(s) this node plays (DESIGN.md §7), repeatable: {', '.join(ROLES)}.",
)
@click.option(
    "--publisher",
    default=DEFAULT_PUBLISHER,
    show_default=True,
    envvar="QBFL_PUBLISHER",
    help="HOST:PORT of `qbfl-publisher serve`.",
)
@click.option(
    "--listen",
    default=None,
    envvar="QBFL_LISTEN",
    help=f"HOST:PORT to serve on [default: 127.0.0.1:{BASE_PORT}+ID].",
)
@click.option(
    "--advertise",
    default=None,
    envvar="QBFL_ADVERTISE",
    help="HOST:PORT peers dial [default: the listen address].",
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    envvar="QBFL_NODE_DIR",
    help="Key and ledger directory [default: qbfl-data/node-ID].",
)
@click.option(
    "--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True
)
@click.option(
    "--dp/--no-dp", default=False, help="Train with DP-SGD (the task's ε, δ; default 4, 1e-5)."
)
@click.option(
    "--dp-accounting",
    type=click.Choice(["run", "round"]),
    default="run",
    show_default=True,
    help="With --dp: the (ε, δ) budget covers the whole task, or each round's update alone.",
)
@click.option(
    "--log-format", type=click.Choice(["text", "json"]), default="text", show_default=True
)
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    default=None,
    help="Serve Prometheus metrics here.",
)
@click.option(
    "--eavesdrop",
    type=click.IntRange(min=0),
    multiple=True,
    metavar="PEER",
    help="Put an intercept-resend eavesdropper on this node's quantum channel with PEER.",
)
@click.option(
    "--qkd",
    type=click.Choice(["bb84", "seeded"]),
    default="bb84",
    show_default=True,
    help="QBA keys from BB84 sessions with each peer, or a seeded stand-in (keys assumed distributed).",
)
@click.option(
    "--linger",
    type=click.FloatRange(min=0),
    default=None,
    help="Exit this many seconds after the task's last block [default: keep serving the ledger "
    "to peers and observers until SIGTERM/Ctrl-C].",
)
@click.option(
    "--publisher-retries",
    type=click.IntRange(min=1),
    default=8,
    show_default=True,
    help="Attempts (backoff 0.5 s doubling to 8 s) before giving up on an unreachable publisher.",
)
def start(
    node_id: int,
    malicious: tuple[str, ...],
    publisher: str,
    listen: str | None,
    advertise: str | None,
    data_dir: Path | None,
    device: str,
    dp: bool,
    dp_accounting: str,
    log_format: str,
    metrics_port: int | None,
    eavesdrop: tuple[int, ...],
    qkd: str,
    linger: float | None,
    publisher_retries: int,
) -> None:
    from qbfl.node.process import NodeShell

    config = NodeConfig(
        node_id=node_id,
        roles=parse_roles(malicious),
        publisher=publisher,
        listen=listen,
        advertise=advertise,
        data_dir=data_dir,
        device=device,
        dp=dp,
        dp_accounting=dp_accounting,
        log_format=log_format,
        metrics_port=metrics_port,
        eavesdrop=tuple(sorted(set(eavesdrop))),
        qkd=qkd,
        linger_s=linger,
        publisher_retries=publisher_retries,
    )
    sys.exit(NodeShell(config).run())


@main.command(help="Print a running node's status (height, head hash, round, view, stake, QKD).")
@click.option(
    "--address", default=f"127.0.0.1:{BASE_PORT}", show_default=True, help="The node's HOST:PORT."
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object instead of lines.")
@click.option("--timeout", type=float, default=5.0, show_default=True)
def status(address: str, as_json: bool, timeout: float) -> None:
    from qbfl.net.probe import node_status

    doc = node_status(address, timeout=timeout)
    if as_json:
        click.echo(json.dumps(doc, sort_keys=True))
        return
    for key in (
        "node",
        "state",
        "role",
        "height",
        "head_hash",
        "round",
        "view",
        "phase",
        "leader",
        "stake",
        "catching_up",
    ):
        if key in doc:
            click.echo(f"{key:12} {doc[key]}")


main.add_command(health)

if __name__ == "__main__":
    main()
