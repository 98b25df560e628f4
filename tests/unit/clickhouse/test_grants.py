"""The roles of decision_audit.clickhouse.grants against the migrations and the code.

chDB has no users or access control, so nothing here logs in as a role: the declaration is
checked against the tables the migrations create and the SQL each component's source
issues, and every rendered statement is parsed by ClickHouse's own parser (chDB's
formatQuery, in a subprocess: one chDB data directory per process).
"""

from __future__ import annotations

import importlib
import inspect
import json
import pkgutil
import re
import subprocess
import sys
from collections import defaultdict

import pytest

from decision_audit.clickhouse import grants as g
from decision_audit.clickhouse.migrate import TRACKING_TABLE, load_migrations
from decision_audit.clickhouse.tables import delete_keys_statements, stored_facts
from decision_audit.contract.fields import CHAINED_KINDS, DECISION_EVENT
from decision_audit.worker import store as store_module
from decision_audit.worker.store import Store

DB = "audit"
CLUSTER = "decision_audit"
Access = dict[str, set[str]]

_PH = r"\{[^}]+\}"  # an f-string placeholder: the database
_RULES = (
    (rf"INSERT INTO {_PH}\.(\w+)", "INSERT"),
    (rf"\.insert\(\s*f\"{_PH}\.(\w+)\"", "INSERT"),
    (r"_insert_rows\(\s*\"(\w+)\"", "INSERT"),
    (rf"(?:FROM|JOIN) {_PH}\.(\w+)", "SELECT"),
    (rf"ALTER TABLE {_PH}\.(\w+) DELETE", "ALTER DELETE"),
)
# ``FROM {database}.{table}``: the tables a chain reader is asked for
_TABLE_ARG = (r"table: str = \"(\w+)\"", r"(?:chain_heads|stored_hashes)\([^)]*\"(\w+)\"\)")


SIDE_KINDS = [k for k in CHAINED_KINDS if k is not DECISION_EVENT]
# SQL on a side kind's tables, named through the contract (``kind.table``): every side kind's
_KIND_RULES = (
    (r"_insert_rows\(\s*kind\.table\b", "INSERT", lambda k: k.table),
    (r"_insert_rows\(\s*kind\.chain\.checkpoints\b", "INSERT", lambda k: k.chain.checkpoints),
    (r"(?:chain_heads|stored_hashes)\([^)]*self\.kind\.table\)", "SELECT", lambda k: k.table),
)


def scan(sources: list[str]) -> Access:
    """(table -> privileges) of the SQL in ``sources``."""
    out: Access = defaultdict(set)
    text = "\n".join(sources)
    for pattern, priv, table in _KIND_RULES:
        if re.search(pattern, text):
            for kind in SIDE_KINDS:
                out[table(kind)].add(priv)
    for pattern, priv in _RULES:
        for m in re.finditer(pattern, text):
            if m.group(1) != "table":
                out[m.group(1)].add(priv)
    if re.search(rf"FROM {_PH}\.\{{table\}}", text):
        for pattern in _TABLE_ARG:
            for m in re.finditer(pattern, text):
                out[m.group(1)].add("SELECT")
    return dict(out)


def package_sources(package: str, *, skip: tuple[str, ...] = ()) -> list[str]:
    pkg = importlib.import_module(package)
    out = []
    for info in pkgutil.iter_modules(pkg.__path__):
        name = f"{package}.{info.name}"
        if name not in skip:
            out.append(inspect.getsource(importlib.import_module(name)))
    return out


KEY_FILER_WRITES = (Store.insert_subject_keys, Store.delete_subject_keys)
"""the methods of the worker's store only the key filer calls (it runs as its own role)"""


def writer_store_source() -> str:
    """worker/store.py as the worker uses it: without the key filer's methods."""
    text = inspect.getsource(store_module)
    for method in KEY_FILER_WRITES:
        source = inspect.getsource(method)
        assert source in text, method
        text = text.replace(source, "")
    return text


def declared(role: str) -> Access:
    return {t: set(r[role]) for t, r in g.TABLES.items() if role in r}


def mv_targets() -> set[tuple[str, str]]:
    """(source table, target table) of each materialized view the migrations create (a table
    may feed several: decisions feeds decisions_hourly and chain_heads)."""
    out = set()
    for mig in load_migrations(DB):
        for stmt in mig.statements:
            m = re.search(rf"MATERIALIZED VIEW.*?\bTO {DB}\.(\w+).*?\bFROM {DB}\.(\w+)", stmt, re.S)
            if m:
                out.add((m.group(2), m.group(1)))
    return out


def expected(found: Access) -> Access:
    """What a role needs for the SQL ``found`` in its code: that SQL, the inserts its
    materialized views make, and the applied-migrations check every command starts with."""
    out: Access = defaultdict(set, {t: set(p) for t, p in found.items()})
    for source, target in mv_targets():
        if "INSERT" in out.get(source, set()):
            out[target].add("INSERT")
    out[TRACKING_TABLE].add("SELECT")
    return dict(out)


COMPONENTS = {
    # `decision-audit reconcile` writes incidents as the worker does: it runs as the writer.
    g.WRITER: lambda: [
        *package_sources(
            "decision_audit.worker",
            skip=("decision_audit.worker.keystore", "decision_audit.worker.store"),
        ),
        writer_store_source(),
        inspect.getsource(stored_facts),  # the promotion guard rail's read
        inspect.getsource(importlib.import_module("decision_audit.audit.reconcile")),
    ],
    g.KEYFILER: lambda: [
        inspect.getsource(importlib.import_module("decision_audit.worker.keystore")),
        *(inspect.getsource(method) for method in KEY_FILER_WRITES),
        inspect.getsource(delete_keys_statements),
    ],
    g.ERASER: lambda: [
        inspect.getsource(importlib.import_module("decision_audit.audit.erasure")),
        inspect.getsource(delete_keys_statements),
    ],
}


def created_tables() -> set[str]:
    names = {TRACKING_TABLE}
    for mig in load_migrations(DB):
        for stmt in mig.statements:
            m = re.match(rf"CREATE (?:TABLE|VIEW) (?:IF NOT EXISTS )?{DB}\.(\w+)", stmt)
            if m:
                names.add(m.group(1))
    return names


def test_every_table_and_view_the_migrations_create_is_declared_and_no_other() -> None:
    assert set(g.TABLES) == created_tables()


@pytest.mark.parametrize("role", sorted(COMPONENTS))
def test_each_component_is_granted_exactly_what_its_sql_touches(role: str) -> None:
    found = scan(COMPONENTS[role]())
    assert found, f"no SQL found for {role}: the scanner no longer reads its code"
    assert declared(role) == expected(found), role


def test_the_writer_reads_chain_heads_and_writes_what_the_store_writes() -> None:
    store = scan([writer_store_source()])
    chained = {k.table for k in CHAINED_KINDS}
    checkpoints = {k.chain.checkpoints for k in CHAINED_KINDS if k.chain is not None}
    assert {"outcomes", "reviews", "model_events"} <= chained
    assert {t for t, p in store.items() if "INSERT" in p} == {
        *chained, *checkpoints, "quarantine", "incidents", "witness_statements",
    }  # fmt: skip
    assert {t for t, p in declared(g.WRITER).items() if "SELECT" in p} == {
        TRACKING_TABLE, *chained, "chain_heads", "witness_statements",  # witness: its log
    }  # fmt: skip
    assert g.GLOBAL[g.WRITER] == ("CREATE TEMPORARY TABLE",)  # worker/staging.py


def test_reconcile_needs_only_what_the_writer_has() -> None:
    found = scan([inspect.getsource(importlib.import_module("decision_audit.audit.reconcile"))])
    assert found == {"model_events": {"SELECT"}, "incidents": {"INSERT"}}
    writer = declared(g.WRITER)
    assert all(privs <= writer.get(table, set()) for table, privs in found.items())


def test_the_auditor_reads_everything_and_writes_only_the_access_log_and_run_records() -> None:
    # erase runs as the eraser; retention and hold (decision_audit.audit.retention) as the
    # admin; reconcile as the writer
    others = (
        "decision_audit.audit.erasure",
        "decision_audit.audit.retention",
        "decision_audit.audit.reconcile",
    )
    found = scan(package_sources("decision_audit.audit", skip=others))
    mine = declared(g.AUDITOR)
    for table, privs in found.items():
        assert privs <= mine.get(table, set()), (table, privs)
    assert found["access_log"] == {"INSERT"}
    assert "INSERT" in found["verify_runs"]
    assert "INSERT" in found["replays"]
    assert set(mine) == set(g.TABLES), "the auditor (and `query`) reads every table"
    writes = {t for t, p in mine.items() if p != {"SELECT"}}
    assert writes == {"access_log", "verify_runs", "replays"}
    assert mine["access_log"] == mine["verify_runs"] == mine["replays"] == {"SELECT", "INSERT"}


def _words(role: str, cluster: str | None) -> str:
    return " ".join(p.split(" ON ")[0] for p in g.privileges(role, DB, cluster))


@pytest.mark.parametrize("cluster", [None, CLUSTER])
def test_writer_and_auditor_cannot_rewrite_history(cluster: str | None) -> None:
    for role, words in g.FORBIDDEN.items():
        granted = _words(role, cluster)
        for word in words:
            assert not re.search(rf"\b{word}\b", granted), (role, word, granted)
    assert not re.search(r"\bDROP DATABASE\b", _words(g.ADMIN, cluster))


def test_on_a_cluster_grants_name_the_local_tables_and_the_cluster() -> None:
    single = g.privileges(g.WRITER, DB)
    clustered = g.privileges(g.WRITER, DB, CLUSTER)
    assert "SELECT, INSERT ON audit.decisions_local" in clustered
    assert "SELECT ON audit.schema_migrations_local" not in clustered  # replicated, not sharded
    assert not any("_local" in p for p in single)
    for role in g.ROLES:
        has_cluster = any(
            p.startswith(("CLUSTER", "CREATE TEMPORARY TABLE, CLUSTER"))
            for p in g.privileges(role, DB, CLUSTER)
        )
        assert has_cluster == (role in g.ON_CLUSTER_ROLES), role
    statements = g.grant_statements(DB, CLUSTER, env={})
    assert all(f"ON CLUSTER {CLUSTER}" in s for s in statements)


def test_users_get_roles_and_hashed_passwords_never_the_password() -> None:
    env = {u.password_env: f"secret-{u.name}" for u in g.USERS}
    script = g.grants_script(DB, env=env)
    for u in g.USERS:
        assert env[u.password_env] not in script
        roles = ", ".join(g.role_name(r) for r in u.roles)
        assert f"GRANT {roles} TO {u.name};" in script
    placeholder = g.grants_script(DB, env={})
    assert "BY 'sha256 of $CLICKHOUSE_PASSWORD'" in placeholder


def _format(queries: list[str]) -> list[str]:
    """Each query as ClickHouse's parser reads it (formatQuery), from a chDB subprocess."""
    code = (
        "import json, sys, chdb\n"
        "out = []\n"
        "for q in json.load(sys.stdin):\n"
        "    lit = \"'\" + q.replace('\\\\', '\\\\\\\\').replace(\"'\", \"\\\\'\") + \"'\"\n"
        "    out.append(str(chdb.query('SELECT formatQuery(' + lit + ')', 'JSONCompact')))\n"
        "print(json.dumps(out))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        input=json.dumps(queries),
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    raw = json.loads(proc.stdout.strip().splitlines()[-1])
    return [json.loads(r)["data"][0][0] for r in raw]


@pytest.mark.integration
def test_every_rendered_statement_parses_in_clickhouse() -> None:
    env = {u.password_env: "pw" for u in g.USERS}
    statements = [
        *g.grant_statements(DB, env=env),
        *g.grant_statements(DB, CLUSTER, env={}),
        # users.d form (no grantee: the user's own); the parser needs one outside users.d
        *(
            f"{q} TO {u.name}"
            for u in g.USERS
            for c in (None, CLUSTER)
            for q in g.user_grants(u, DB, c)
        ),
    ]
    formatted = _format(statements)
    assert len(formatted) == len(statements)
    grant_re = re.compile(
        r"^GRANT (?:ON CLUSTER \w+ )?(?P<privs>.+?) ON (?P<on>\S+)(?: TO (?P<to>\w+))?$"
    )
    by_role: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for f in formatted:
        assert f.startswith(("CREATE ROLE", "CREATE USER", "GRANT")), f
        m = grant_re.match(f)
        if m and m["to"] and m["to"].startswith(g.ROLE_PREFIX):
            by_role[m["to"].removeprefix(g.ROLE_PREFIX)].append((m["privs"], m["on"]))
    writer = " ".join(p for p, _ in by_role[g.WRITER])
    for word in ("ALTER", "DELETE", "DROP", "TRUNCATE", "OPTIMIZE"):
        assert word not in writer, writer
    for privs, on in by_role[g.AUDITOR]:
        assert privs == "SELECT" or (
            privs == "SELECT, INSERT"
            and on.startswith(("audit.access_log", "audit.verify_runs", "audit.replays"))
        ), (privs, on)
    covered = {on.split(".", 1)[1].removesuffix("_local") for _, on in by_role[g.AUDITOR]}
    assert covered == set(g.TABLES)
