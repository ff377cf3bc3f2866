"""The CLI edge: a click group that turns QBFL's typed errors into one clear line and an exit code."""

from __future__ import annotations

from typing import Any

import click

from qbfl.errors import ConfigError, DatasetNotFound, QbflError

# Exit codes a script can branch on (click itself uses 2 for bad flags).
EXIT_ERROR = 1
EXIT_MISSING_DATA = 3


class QbflCommandError(click.ClickException):
    """A QbflError reported to a person: `Error: <message>` on stderr, no traceback."""

    exit_code = EXIT_ERROR


class MissingDataError(QbflCommandError):
    """The datasets are not installed: exit 3, so scripts can tell it from other failures."""

    exit_code = EXIT_MISSING_DATA


class QbflGroup(click.Group):
    """Runs a subcommand and maps QbflError (and config ValueErrors) to QbflCommandError."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ConfigError as exc:
            raise click.UsageError(str(exc), ctx) from exc
        except DatasetNotFound as exc:
            raise MissingDataError(str(exc)) from exc
        except QbflError as exc:
            raise QbflCommandError(str(exc)) from exc
