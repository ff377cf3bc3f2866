"""qbfl-orchestrator: launch QBFL networks (in-process simulation now; local processes and Docker later)."""

from __future__ import annotations

import click


@click.group(help="Launch and measure QBFL networks.")
def main() -> None:
    pass
