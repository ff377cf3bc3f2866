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


class NumberList(click.ParamType):
    """A comma-separated list of numbers for a flag (`--sizes 3,5,7`), each within [low, high).

    A bad item is click's usage error naming the flag and the item (exit 2), not a traceback.
    """

    name = "list"

    def __init__(
        self, kind: type[int] | type[float], *, low: float | None = None, high: float | None = None
    ) -> None:
        self.kind, self.low, self.high = kind, low, high

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, list):
            return value
        items = [item.strip() for item in str(value).split(",") if item.strip()]
        if not items:
            self.fail("needs at least one number", param, ctx)
        numbers = []
        for item in items:
            try:
                number = self.kind(item)
            except ValueError:
                self.fail(
                    f"{item!r} is not a{'n integer' if self.kind is int else ' number'}", param, ctx
                )
            if (self.low is not None and number < self.low) or (
                self.high is not None and number >= self.high
            ):
                bounds = f"[{self.low if self.low is not None else '-inf'}, {self.high if self.high is not None else 'inf'})"
                self.fail(f"{item} is outside {bounds}", param, ctx)
            numbers.append(number)
        return numbers


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
