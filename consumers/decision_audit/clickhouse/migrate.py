"""Applying the ordered DDL files in ``schemas/migrations`` idempotently, on one server or
laid out on a cluster (:mod:`.cluster`)."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from functools import cache
from importlib import resources
from typing import Any

from decision_audit.clickhouse.cluster import (
    ClusterRenderer,
    ClusterRenderError,
    quote_ident,
    quote_str,
    render_statements,
)
from decision_audit.contract.errors import DecisionAuditError

_FILE_RE = re.compile(r"^(?P<version>\d{4})_(?P<name>[a-z0-9_]+)\.sql$")
_COMMENT_RE = re.compile(r"--[^\n]*")

TRACKING_TABLE = "schema_migrations"
"""the applied versions, one row each"""


class ClusterNeedsServer(DecisionAuditError, ValueError):
    """``--cluster`` given with the embedded engine, which has no clusters."""


class MigrationDenied(DecisionAuditError, PermissionError):
    """Migrations are pending and this ClickHouse user has no DDL grants."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    statements: tuple[str, ...]

    @property
    def label(self) -> str:
        return f"{self.version:04d}_{self.name}"


def load_migrations(database: str, cluster: str | None = None) -> list[Migration]:
    """The shipped migrations, in order, with ``{database}`` filled in; for a ``cluster``,
    rendered as :mod:`.cluster` lays them out (all of them: each may build on the last)."""
    out = []
    for entry in resources.files("decision_audit.contract").joinpath("migrations").iterdir():
        m = _FILE_RE.match(entry.name)
        if not m:
            continue
        text = _COMMENT_RE.sub("", entry.read_text(encoding="utf-8")).replace(
            "{database}", database
        )
        statements = tuple(s.strip() for s in text.split(";") if s.strip())
        out.append(Migration(int(m["version"]), m["name"], statements))
    migrations = sorted(out, key=lambda mig: mig.version)
    if cluster is None:
        return migrations
    renderer = ClusterRenderer(database, cluster)
    rendered = []
    for mig in migrations:
        try:
            statements = render_statements(renderer, mig.statements)
        except ClusterRenderError as exc:
            raise ClusterRenderError(f"migration {mig.label}: {exc}") from None
        rendered.append(replace(mig, statements=statements))
    return rendered


def tracking_statements(database: str, cluster: str | None = None) -> tuple[str, ...]:
    """The DDL of the database and of its migrations-tracking table (replicated to every
    server of a ``cluster``)."""
    db = quote_ident(database)
    statements = (
        f"CREATE DATABASE IF NOT EXISTS {db}",
        f"CREATE TABLE IF NOT EXISTS {db}.{TRACKING_TABLE} "
        "(version UInt32, name String, applied_at DateTime64(3, 'UTC') DEFAULT now64(3)) "
        "ENGINE = ReplacingMergeTree ORDER BY version",
    )
    if cluster is None:
        return statements
    return render_statements(ClusterRenderer(database, cluster), statements)


def applied_versions(client: Any, database: str, cluster: str | None = None) -> set[int]:
    for stmt in tracking_statements(database, cluster):
        client.command(stmt)
    if cluster is not None:
        # This server's replica of the tracking table has every version recorded anywhere
        # in the cluster: a backfill must not run twice because a replica lagged.
        client.command(f"SYSTEM SYNC REPLICA {quote_ident(database)}.{TRACKING_TABLE}")
    rows = client.query(f"SELECT version FROM {database}.{TRACKING_TABLE}").result_rows
    return {int(r[0]) for r in rows}


def migrate(client: Any, database: str = "audit", cluster: str | None = None) -> list[Migration]:
    """Apply every migration not yet recorded in ``{database}.schema_migrations``; with a
    ``cluster``, its ``ON CLUSTER`` rendering, from the server ``client`` talks to.

    Statements are ``IF NOT EXISTS``, so re-running after a partial failure is safe.
    Returns the migrations applied by this call. A store already up to date is only read
    (the worker's and the key filer's start): a user without DDL grants (:mod:`.grants`)
    can call this; one that has migrations to apply is told to run ``decision-audit migrate``.
    """
    if _up_to_date(client, database):
        return []
    try:
        return _apply(client, database, cluster)
    except Exception as exc:
        if getattr(exc, "name", None) != "ACCESS_DENIED":
            raise
        raise MigrationDenied(
            f"{database} needs migrations this ClickHouse user may not run ({exc}): run "
            "`decision-audit migrate` as the admin user (decision_audit_admin, "
            "see `decision-audit migrate --print-grants`) first"
        ) from exc


def _up_to_date(client: Any, database: str) -> bool:
    """Every shipped migration is recorded (False if the tracking table cannot be read)."""
    from clickhouse_connect.driver.exceptions import DatabaseError

    try:
        rows = client.query(f"SELECT version FROM {database}.{TRACKING_TABLE}").result_rows
    except DatabaseError:
        return False
    applied = {int(r[0]) for r in rows}
    return all(m.version in applied for m in load_migrations(database))


def _apply(client: Any, database: str, cluster: str | None) -> list[Migration]:
    done = applied_versions(client, database, cluster)
    applied = []
    for mig in load_migrations(database, cluster):
        if mig.version in done:
            continue
        for stmt in mig.statements:
            client.command(stmt)
        client.insert(
            f"{database}.{TRACKING_TABLE}",
            [[mig.version, mig.name]],
            column_names=["version", "name"],
        )
        applied.append(mig)
    return applied


@cache
def cluster_statements(sql: str, database: str, cluster: str | None) -> tuple[str, ...]:
    """A tool's statement on the tables (e.g. ``ALTER TABLE {database}.T DELETE WHERE …``) as
    it runs where the migrations laid them out: ``sql`` itself on one server; on a
    ``cluster``, rendered as :mod:`.cluster` renders a migration (a mutation addresses the
    local tables ``ON CLUSTER``: a Distributed table takes none)."""
    if cluster is None:
        return (sql,)
    renderer = ClusterRenderer(database, cluster)
    for mig in load_migrations(database):
        render_statements(renderer, mig.statements)  # learns which tables are sharded
    return render_statements(renderer, (sql,))


def migration_script(database: str, cluster: str | None = None) -> str:
    """Every statement :func:`migrate` runs on an empty database, as one SQL script (each
    statement ends with ``;`` at the end of a line), the tracking rows included."""
    where = f"database {database}" + (f" on cluster {cluster}" if cluster else " (one server)")
    parts = [f"-- decision-audit migrations for {where}", "-- the migrations-tracking table"]
    parts += [f"{stmt};\n" for stmt in tracking_statements(database, cluster)]
    for mig in load_migrations(database, cluster):
        parts.append(f"-- {mig.label}")
        parts += [f"{stmt};\n" for stmt in mig.statements]
        parts.append(
            f"INSERT INTO {quote_ident(database)}.{TRACKING_TABLE} (version, name) "
            f"VALUES ({mig.version}, {quote_str(mig.name)});\n"
        )
    return "\n".join(parts)
