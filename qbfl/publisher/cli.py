"""qbfl-publisher: emit the task and the genesis block."""

from __future__ import annotations

import sys

import click

from qbfl.publisher.health_cli import health


@click.group(help="Publish a QBFL task and its genesis block.")
def main() -> None:
    pass


@main.command(help="Write the task file and the signed genesis block.")
@click.option("--task", type=click.Choice(["mnist", "fashion-mnist"]), required=True)
@click.option("--nodes", type=click.IntRange(min=3), default=50, show_default=True)
@click.option("--out", type=click.Path(file_okay=False), default="run", show_default=True)
def init(task: str, nodes: int, out: str) -> None:
    click.echo(
        f"qbfl-publisher init --task {task}: the networked publisher is not implemented yet",
        err=True,
    )
    sys.exit(2)


main.add_command(health)
