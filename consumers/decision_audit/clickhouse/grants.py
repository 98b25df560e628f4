"""Who may do what to the audit tables: the roles and users a deployment creates, declared once.

:data:`TABLES` gives every table the migrations create one line: the privileges each role
holds on it. Roles:

* ``writer`` — the worker: INSERT into what :class:`decision_audit.worker.store.Store`
  writes for it (its ``subject_keys`` methods are the key filer's) and the rollups its
  materialized views fill, SELECT of the chain heads it reads, CREATE TEMPORARY TABLE for
  its ClickHouse-side parsing (:mod:`decision_audit.worker.staging`; a session's temporary
  tables need no other grant). Never ALTER, DELETE, DROP, TRUNCATE or
  OPTIMIZE: a leaked worker password cannot rewrite history. ``decision-audit reconcile``
  runs as the writer too (it reads the model events and inserts its incidents).
* ``keyfiler`` — ``decision-audit keystore file``: INSERT into ``subject_keys``, SELECT of
  ``erasures``, and ALTER DELETE on ``subject_keys`` (its sweep deletes a key an erasure
  that ran during the insert covers).
* ``auditor`` — verify, trace, report, replay, query, dashboards: SELECT, plus INSERT into
  ``access_log`` (the tools record who read the trail), ``verify_runs`` (verify records
  every run) and ``replays`` (replay records every run).
* ``eraser`` — ``decision-audit erase``: reads the keys and erasures, records the erasure
  and deletes the keys. Its own role, not the auditor's (read-only but for the log), the
  writer's (never deletes) or the admin's (DDL is far more than erasure needs): grant it,
  with ``auditor``, to the people who hold the key store's private key.
* ``admin`` — ``decision-audit migrate``, ``retention`` and ``hold``: DDL on the database
  (retention's ALTER DELETE, the holds and prunings it records).

On a cluster every grant on a sharded table also names its ``*_local`` table (a
Distributed table's shards check the initial user's grants there), roles and users are
created ``ON CLUSTER``, and the roles that run ``ON CLUSTER`` statements get CLUSTER.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from decision_audit.clickhouse.cluster import (
    LOCAL_SUFFIX,
    ClusterRenderer,
    quote_ident,
    quote_str,
    render_statements,
)
from decision_audit.contract.fields import CHAINED_KINDS

WRITER = "writer"
KEYFILER = "keyfiler"
AUDITOR = "auditor"
ERASER = "eraser"
ADMIN = "admin"

ROLE_PREFIX = "decision_audit_"
"""role ``writer`` is ``decision_audit_writer`` on the server"""

S, I, D = "SELECT", "INSERT", "ALTER DELETE"  # noqa: E741 (the table below reads as a grid)


def _chained_tables() -> dict[str, dict[str, tuple[str, ...]]]:
    """Each chained record kind's table and checkpoint table (contract/fields.py): the worker
    writes both and reads the chain heads back; a new record kind needs no line here."""
    out: dict[str, dict[str, tuple[str, ...]]] = {}
    for kind in CHAINED_KINDS:
        assert kind.chain is not None
        out[kind.table] = {WRITER: (S, I), AUDITOR: (S,)}
        out[kind.chain.checkpoints] = {WRITER: (I,), AUDITOR: (S,)}
    return out


TABLES: Mapping[str, Mapping[str, tuple[str, ...]]] = {
    # table                   role: privileges on it (a new table is one line here)
    "schema_migrations":       {WRITER: (S,), KEYFILER: (S,), AUDITOR: (S,), ERASER: (S,)},
    **_chained_tables(),
    "quarantine":              {WRITER: (I,), AUDITOR: (S,)},
    "incidents":               {WRITER: (I,), AUDITOR: (S,)},
    "witness_statements":      {WRITER: (S, I), AUDITOR: (S,)},
    "access_log":              {AUDITOR: (S, I)},
    "decisions_hourly":        {WRITER: (I,), AUDITOR: (S,)},
    "quarantine_hourly":       {WRITER: (I,), AUDITOR: (S,)},
    "incidents_hourly":        {WRITER: (I,), AUDITOR: (S,)},
    # filled by the heads views on the writer's inserts; the worker recovers heads from it
    "chain_heads":             {WRITER: (S, I), AUDITOR: (S,)},
    # verify records every run (and an incremental run reads the last ones back)
    "verify_runs":             {AUDITOR: (S, I)},
    # replay records every run
    "replays":                 {AUDITOR: (S, I)},
    "subject_keys":            {KEYFILER: (I, D), AUDITOR: (S,), ERASER: (S, D)},
    "erasures":                {KEYFILER: (S,), AUDITOR: (S,), ERASER: (S, I)},
    # written by the admin (hold, retention: its database grants); verify reads the prunings
    "legal_holds":             {AUDITOR: (S,)},
    "retention_prunings":      {AUDITOR: (S,)},
    "retention_runs":          {AUDITOR: (S,)},
    # plain views: a view runs with its reader's grants on the tables it reads
    "decision_outcomes":       {AUDITOR: (S,)},
    "decision_reviews":        {AUDITOR: (S,)},
}  # fmt: skip
"""Every table and plain view, and what each role may do to it. ``schema_migrations``: every
command checks the applied migrations first. The ``*_hourly`` rollups and ``chain_heads``:
filled by materialized views on the writer's inserts; a view without ``SQL SECURITY DEFINER``
inserts with the writer's grants."""

GLOBAL: Mapping[str, tuple[str, ...]] = {
    WRITER: ("CREATE TEMPORARY TABLE",),
}
"""privileges ``ON *.*`` (CREATE TEMPORARY TABLE exists only there)"""

DATABASE: Mapping[str, tuple[str, ...]] = {
    ADMIN: (
        "SHOW",
        "SELECT",
        "INSERT",
        "ALTER",
        "CREATE DATABASE",
        "CREATE TABLE",
        "CREATE VIEW",
        "DROP TABLE",
        "DROP VIEW",
        "TRUNCATE",
        "OPTIMIZE",
        "SYSTEM SYNC REPLICA",
    ),
}
"""privileges ``ON {database}.*``: the admin's DDL (never DROP DATABASE)"""

ON_CLUSTER_ROLES = (KEYFILER, ERASER, ADMIN)
"""roles whose statements run ``ON CLUSTER`` (key deletes, migrations): CLUSTER ON *.*"""

FORBIDDEN = {
    WRITER: ("ALTER", "DELETE", "DROP", "TRUNCATE", "OPTIMIZE", "CREATE TABLE", "CREATE VIEW"),
    AUDITOR: ("ALTER", "DELETE", "DROP", "TRUNCATE", "OPTIMIZE", "CREATE"),
}
"""words no grant of these roles may contain (checked by the tests)"""


@dataclass(frozen=True)
class User:
    name: str
    roles: tuple[str, ...]
    password_env: str
    """the environment variable holding its password (the same the deployment uses)"""
    runs: str


USERS: tuple[User, ...] = (
    User("decision_audit", (WRITER,), "CLICKHOUSE_PASSWORD", "decision-audit worker"),
    User("decision_audit_keys", (KEYFILER,), "CLICKHOUSE_KEYS_PASSWORD", "keystore file"),
    User(
        "auditor", (AUDITOR,), "CLICKHOUSE_AUDITOR_PASSWORD", "verify, trace, report, replay, query"
    ),
    User("decision_audit_admin", (ADMIN,), "CLICKHOUSE_ADMIN_PASSWORD", "migrate, retention"),
)
"""The deployment's users (``eraser`` is granted to people, not to a service)."""

ROLES = (WRITER, KEYFILER, AUDITOR, ERASER, ADMIN)


def role_name(role: str) -> str:
    return ROLE_PREFIX + role


@cache
def _sharded(database: str, cluster: str) -> frozenset[str]:
    """The tables the cluster layout shards (each has a ``*_local`` table)."""
    from decision_audit.clickhouse.migrate import load_migrations

    renderer = ClusterRenderer(database, cluster)
    for mig in load_migrations(database):
        render_statements(renderer, mig.statements)
    return frozenset(renderer.sharded)


def privileges(role: str, database: str, cluster: str | None = None) -> tuple[str, ...]:
    """The role's grants as ``PRIVS ON target`` (no ``GRANT``, no grantee), in a stable order."""
    db = quote_ident(database)
    out: list[str] = []
    glob = list(GLOBAL.get(role, ()))
    if cluster is not None and role in ON_CLUSTER_ROLES:
        glob.append("CLUSTER")
    if glob:
        out.append(f"{', '.join(glob)} ON *.*")
    if role in DATABASE:
        out.append(f"{', '.join(DATABASE[role])} ON {db}.*")
    sharded = _sharded(database, cluster) if cluster is not None else frozenset()
    for table, grants in TABLES.items():
        privs = grants.get(role)
        if not privs:
            continue
        out.append(f"{', '.join(privs)} ON {db}.{quote_ident(table)}")
        if table in sharded:
            out.append(f"{', '.join(privs)} ON {db}.{quote_ident(table + LOCAL_SUFFIX)}")
    return tuple(out)


def user_grants(user: User, database: str, cluster: str | None = None) -> tuple[str, ...]:
    """What ``user`` may do, as the ``GRANT …`` queries of a users.d ``<grants>`` element
    (an XML user holds its roles' grants itself: users.d defines no roles)."""
    return tuple(f"GRANT {p}" for role in user.roles for p in privileges(role, database, cluster))


def _identified(user: User, env: Mapping[str, str]) -> str:
    password = env.get(user.password_env)
    if password:
        digest = hashlib.sha256(password.encode()).hexdigest()
        return f"IDENTIFIED WITH sha256_hash BY {quote_str(digest)}"
    # Not a hash: the server refuses it, so a script printed without the password cannot
    # create a user anyone could log in as.
    return f"IDENTIFIED WITH sha256_hash BY {quote_str('sha256 of $' + user.password_env)}"


def grant_statements(
    database: str, cluster: str | None = None, env: Mapping[str, str] | None = None
) -> tuple[str, ...]:
    """Every statement that creates the roles, their grants and the users (with each user's
    password from ``env``, default ``os.environ``, as a SHA-256 hash; a placeholder the
    server rejects when the variable is unset)."""
    env = os.environ if env is None else env
    on = f" ON CLUSTER {quote_ident(cluster)}" if cluster is not None else ""
    out: list[str] = []
    for role in ROLES:
        name = quote_ident(role_name(role))
        out.append(f"CREATE ROLE IF NOT EXISTS {name}{on}")
        out += [f"GRANT{on} {p} TO {name}" for p in privileges(role, database, cluster)]
    for user in USERS:
        name = quote_ident(user.name)
        out.append(f"CREATE USER IF NOT EXISTS {name}{on} {_identified(user, env)}")
        roles = ", ".join(quote_ident(role_name(r)) for r in user.roles)
        out.append(f"GRANT{on} {roles} TO {name}")
    return tuple(out)


def grants_script(
    database: str, cluster: str | None = None, env: Mapping[str, str] | None = None
) -> str:
    """:func:`grant_statements` as one SQL script, each statement ending ``;`` at a line end."""
    where = f"database {database}" + (f" on cluster {cluster}" if cluster else " (one server)")
    lines = [
        f"-- decision-audit roles and users for {where}",
        "-- run as a user with access management (GRANT OPTION on these privileges);",
        "-- passwords: SHA-256 of " + ", ".join(f"${u.password_env}" for u in USERS),
    ]
    for stmt in grant_statements(database, cluster, env):
        if stmt.startswith("CREATE ROLE") or stmt.startswith("CREATE USER"):
            lines.append("")
        lines.append(f"{stmt};")
    return "\n".join(lines) + "\n"


def rewrite_users_d(path: Path, database: str = "audit", cluster: str | None = None) -> bool:
    """Rewrite each declared user's ``<grants>`` in the users.d file ``path`` to its roles'
    grants (the file's layout and comments kept); True when the file changed."""
    text = path.read_text()
    start = text.index("<users>")  # the users' section: profiles may share their names
    out = text
    for user in USERS:
        pattern = rf"(<{user.name}>(?:(?!</{user.name}>).)*?<grants[^>]*>)(.*?)(\n(\s*)</grants>)"
        block = re.compile(pattern, re.S).search(out, start)
        if block is None:
            continue
        indent = block.group(4) + "    "
        queries = "".join(
            f"\n{indent}<query>{q}</query>" for q in user_grants(user, database, cluster)
        )
        out = out[: block.start(2)] + queries + out[block.end(2) :]
    if out != text:
        path.write_text(out)
    return out != text


def main(argv: list[str] | None = None) -> int:
    """``python -m decision_audit.clickhouse.grants FILE [--cluster NAME]``: bring a users.d
    file's grants up to date with :data:`TABLES` (after a migration adds a table)."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m decision_audit.clickhouse.grants")
    p.add_argument("file", type=Path, help="a users.d XML file holding the declared users")
    p.add_argument("--database", default="audit")
    p.add_argument("--cluster", default=None, help="render the cluster grants (*_local tables)")
    a = p.parse_args(argv)
    changed = rewrite_users_d(a.file, a.database, a.cluster)
    print(f"{a.file}: {'updated' if changed else 'up to date'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
