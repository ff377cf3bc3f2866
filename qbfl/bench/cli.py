"""qbfl-bench: one subcommand per benchmark; each lives in its own module and is imported lazily."""

from __future__ import annotations

import importlib

import click

from qbfl.command_line import QbflGroup

# name -> module under qbfl.bench that defines a click command named `command`
BENCHMARKS: dict[str, str] = {
    "table1": "qbfl.bench.table1",
    "table2": "qbfl.bench.table2",
    "table3": "qbfl.bench.table3",
    "fig4": "qbfl.bench.fig4",
    "robustness": "qbfl.bench.robustness",
    "aggregators": "qbfl.bench.aggregators",
    "sim-speed": "qbfl.bench.sim_speed",
    "qba": "qbfl.bench.qba",
    "crypto": "qbfl.bench.crypto",
    "ledger": "qbfl.bench.ledger",
    "qkd": "qbfl.bench.qkd",
    "network": "qbfl.bench.network",
    "backends": "qbfl.bench.backends",
}


class LazyBenchGroup(QbflGroup):
    """A group whose subcommands are imported only when run, so `--help` stays fast."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(BENCHMARKS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        module_name = BENCHMARKS.get(cmd_name)
        if module_name is None:
            return None
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:
                raise click.ClickException(f"benchmark {cmd_name!r} is not built yet") from exc
            raise
        command = module.command
        assert isinstance(command, click.Command)
        return command


@click.group(cls=LazyBenchGroup, help="Reproduce the paper's tables and measure QBFL's speed.")
def main() -> None:
    pass
