"""The command line's one error boundary: every expected failure becomes one line and an exit
code (2 for bad usage, as click has it; 1 for anything else), never a traceback.

decision-audit's own errors (:class:`DecisionAuditError`) carry messages that name the fix;
errors of the file system, ClickHouse and Kafka clients that reach the boundary are reduced
to their gist. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys
from typing import IO, Any

import click
from pydantic import ValidationError

from decision_audit.clickhouse.connect import reason
from decision_audit.contract.errors import DecisionAuditError
from decision_audit.contract.settings import ENV_PREFIX


def one_line(text: str) -> str:
    """``text`` with its line breaks folded, so an error is a single line."""
    return " ".join(part.strip() for part in text.strip().splitlines() if part.strip())


class UsageLine(click.UsageError):
    """A usage error shown as one line (exit 2), with the command's ``--help`` to read."""

    def __init__(self, message: str, ctx: click.Context | None = None) -> None:
        super().__init__(one_line(message), ctx)

    def show(self, file: IO[Any] | None = None) -> None:
        hint = f" (see '{self.ctx.command_path} --help')" if self.ctx is not None else ""
        click.echo(f"Error: {self.format_message()}{hint}", file=file or sys.stderr)


class ErrorLine(click.ClickException):
    """A failure shown as one line (exit 1)."""

    def __init__(self, message: str) -> None:
        super().__init__(one_line(message))


def explain(exc: BaseException) -> click.ClickException | None:
    """The one-line error ``exc`` becomes at the boundary, or None for a bug."""
    if isinstance(exc, click.ClickException):
        if isinstance(exc, click.exceptions.NoArgsIsHelpError):
            return None  # shows the help, as it should
        if isinstance(exc, click.UsageError) and not isinstance(exc, UsageLine):
            return UsageLine(exc.format_message(), exc.ctx)
        if type(exc) is click.ClickException:
            return ErrorLine(exc.format_message())
        return None
    if isinstance(exc, ValidationError) and exc.title.endswith("Settings"):
        # Settings read inside a command (the producer's, the access log's): the bad value
        # came from the environment.
        return UsageLine("; ".join(_env_problem(e) for e in exc.errors()))
    if isinstance(exc, DecisionAuditError):
        # The root's ValueError children are bad arguments: usage errors, as click's are.
        return UsageLine(str(exc)) if isinstance(exc, ValueError) else ErrorLine(str(exc))
    if isinstance(exc, OSError) and exc.filename is not None:
        return ErrorLine(f"{reason(exc)}: check the path and its permissions")
    module = type(exc).__module__
    if module.startswith("clickhouse_connect"):
        return ErrorLine(f"ClickHouse: {reason(exc)}")
    if module.startswith(("confluent_kafka", "cimpl")):
        return ErrorLine(f"Kafka: {exc}")
    return None


def _env_problem(error: Any) -> str:
    msg = str(error["msg"]).removeprefix("Value error, ")
    loc = error["loc"]
    return f"{ENV_PREFIX}{str(loc[0]).upper()}: {msg}" if loc else msg


class AuditGroup(click.Group):
    """The ``decision-audit`` group: its subcommands' errors pass :func:`explain`."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except Exception as exc:
            line = explain(exc)
            if line is None:
                raise
            raise line from None

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as exc:
            line = explain(exc)
            if line is None:
                raise
            raise line from None
