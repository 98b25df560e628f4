"""The ``decision-audit`` command line (needs the ``worker`` extra)."""

from __future__ import annotations

import sys

EXTRA_HINT = "pip install 'decision-audit[worker]'"


def main() -> None:
    """Entry point: run the command line, or say in one line which extra it needs."""
    try:
        import click  # noqa: F401
        import clickhouse_connect  # noqa: F401
        import rich  # noqa: F401
    except ImportError as exc:
        sys.stderr.write(
            f"decision-audit: the command line needs {exc.name!r}, which the producer-only "
            f"install leaves out; install the worker extra: {EXTRA_HINT}\n"
        )
        raise SystemExit(2) from None
    from decision_audit.cli.main import main as cli

    cli()
