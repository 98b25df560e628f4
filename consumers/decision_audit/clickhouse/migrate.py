"""Applying the ordered DDL files in ``schemas/migrations`` idempotently."""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

_FILE_RE = re.compile(r"^(?P<version>\d{4})_(?P<name>[a-z0-9_]+)\.sql$")
_COMMENT_RE = re.compile(r"--[^\n]*")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    statements: tuple[str, ...]


def load_migrations(database: str) -> list[Migration]:
    """The shipped migrations, in order, with ``{database}`` filled in."""
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
    return sorted(out, key=lambda mig: mig.version)


def applied_versions(client: Any, database: str) -> set[int]:
    client.command(f"CREATE DATABASE IF NOT EXISTS {database}")
    client.command(
        f"CREATE TABLE IF NOT EXISTS {database}.schema_migrations "
        "(version UInt32, name String, applied_at DateTime64(3, 'UTC') DEFAULT now64(3)) "
        "ENGINE = ReplacingMergeTree ORDER BY version"
    )
    rows = client.query(f"SELECT version FROM {database}.schema_migrations").result_rows
    return {int(r[0]) for r in rows}


def migrate(client: Any, database: str = "audit") -> list[Migration]:
    """Apply every migration not yet recorded in ``{database}.schema_migrations``.

    Statements are ``IF NOT EXISTS``, so re-running after a partial failure is safe.
    Returns the migrations applied by this call.
    """
    done = applied_versions(client, database)
    applied = []
    for mig in load_migrations(database):
        if mig.version in done:
            continue
        for stmt in mig.statements:
            client.command(stmt)
        client.insert(
            f"{database}.schema_migrations",
            [[mig.version, mig.name]],
            column_names=["version", "name"],
        )
        applied.append(mig)
    return applied
