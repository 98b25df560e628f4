"""Opening the audit store for a command: connect, and check that it has been migrated."""

from __future__ import annotations

from typing import Any

from decision_audit.clickhouse.connect import connect, redact_dsn
from decision_audit.clickhouse.migrate import Migration, load_migrations
from decision_audit.clickhouse.settings import ClickHouseSettings
from decision_audit.contract.errors import DecisionAuditError

_ABSENT = {"UNKNOWN_DATABASE", "UNKNOWN_TABLE"}


class StoreNotMigrated(DecisionAuditError, RuntimeError):
    """The database lacks the audit tables (or some migrations); run ``migrate``."""


def open_store(settings: ClickHouseSettings, *, require_migrated: bool = True) -> Any:
    """A client of the store ``settings`` names; with ``require_migrated``, raises
    :class:`StoreNotMigrated` (naming the ``migrate`` command to run) when the database does
    not hold every shipped migration."""
    client = connect(settings.clickhouse_url)
    if require_migrated:
        pending = pending_migrations(client, settings.database)
        if pending:
            raise StoreNotMigrated(_not_migrated(settings, pending))
    return client


def pending_migrations(client: Any, database: str) -> list[Migration]:
    """The shipped migrations ``database`` has not applied (all of them for a missing database).

    Empty when the applied versions cannot be read for another reason (a reader without the
    grant, say): the command then runs and meets the store as it is.
    """
    from clickhouse_connect.driver.exceptions import DatabaseError

    try:
        rows = client.query(f"SELECT version FROM {database}.schema_migrations").result_rows
    except DatabaseError as exc:
        if getattr(exc, "name", None) not in _ABSENT:
            return []
        rows = []
    applied = {int(r[0]) for r in rows}
    return [m for m in load_migrations(database) if m.version not in applied]


def _not_migrated(settings: ClickHouseSettings, pending: list[Migration]) -> str:
    dsn = redact_dsn(settings.clickhouse_url)
    run = f"run `decision-audit migrate --clickhouse-url {dsn} --database {settings.database}`"
    if len(pending) == len(load_migrations(settings.database)):
        return (
            f"database {settings.database!r} at {dsn} has no audit tables: {run} first, or "
            "point --clickhouse-url/--database at the store the worker writes"
        )
    names = ", ".join(f"{m.version:04d}_{m.name}" for m in pending)
    return f"database {settings.database!r} at {dsn} lacks migration(s) {names}: {run}"
