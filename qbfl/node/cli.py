"""qbfl-node: run one QBFL node process."""

from __future__ import annotations

import sys

import click

from qbfl.node.health_cli import health

ROLES = ("labelflip", "bitflip", "gaussian", "random", "equivocate", "wrongagg", "oppose")


@click.group(help="Run one QBFL node.")
def main() -> None:
    pass


@main.command(help="Start node ID and join the network named in the genesis block.")
@click.option(
    "--id", "node_id", type=click.IntRange(min=0), required=True, help="Node id in the roster."
)
@click.option(
    "--malicious",
    type=click.Choice(ROLES),
    multiple=True,
    help="Malicious role(s) this node plays (DESIGN.md §7).",
)
def start(node_id: int, malicious: tuple[str, ...]) -> None:
    click.echo(
        f"qbfl-node start --id {node_id}: the networked node is not implemented yet "
        "(use `qbfl-orchestrator simulate` for in-process experiments)",
        err=True,
    )
    sys.exit(2)


main.add_command(health)
