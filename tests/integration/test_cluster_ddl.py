"""The cluster DDL against ClickHouse's own parser and the single-node tables (chDB).

chDB cannot run Replicated engines, Distributed tables or ON CLUSTER, so the cluster
statements are parsed (``formatQuery``), not executed. To compare the tables both layouts
end with, the parsed cluster DDL is then replayed with stand-ins only for what chDB lacks:
no ON CLUSTER, the plain engine under each Replicated one, a Merge table in place of each
Distributed one (it takes the same column ALTERs). Columns, defaults, codecs and keys are
then read back from ``system.columns`` and ``system.tables`` of both databases.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from decision_audit.clickhouse.migrate import TRACKING_TABLE, load_migrations, migration_script
from decision_audit.contract.fields import RECORD_KINDS

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CONSUMERS = ROOT / "consumers" / "decision_audit"
DASHBOARDS = ROOT / "deploy" / "grafana" / "dashboards"
CLUSTER = "c"
CLI = [sys.executable, "-m", "decision_audit.cli.main"]

JOIN_WORDS = "ANY|ALL|ASOF|SEMI|ANTI|INNER|LEFT|RIGHT|FULL|CROSS|OUTER|PASTE"
ON_CLUSTER_RE = re.compile(r" ON CLUSTER (?:`(?:[^`\\]|\\.)*`|\w+)")
REPLICATED_RE = re.compile(r"ENGINE = Replicated(\w+)\('(?:[^'\\]|\\.)*', '(?:[^'\\]|\\.)*'(?:, )?")
DISTRIBUTED_RE = re.compile(r"ENGINE = Distributed\('[^']*', '(\w+)', '(\w+)'(?:, .*)?\)$", re.S)


def parse(ch: Any, sql: str) -> str:
    """``sql`` as ClickHouse's parser reads it (formatted back); raises on a syntax error."""
    return str(ch.query("SELECT formatQuery({q:String})", parameters={"q": sql}).result_rows[0][0])


def script_statements(text: str) -> list[str]:
    body = "\n".join(line for line in text.splitlines() if not line.startswith("--"))
    return [s.strip() for s in re.split(r";\s*$", body, flags=re.M) if s.strip()]


def standin(formatted: str) -> str | None:
    """A parsed cluster statement as chDB can run it, or None for an INSERT."""
    if formatted.startswith("INSERT"):
        return None
    sql = ON_CLUSTER_RE.sub("", formatted, count=1)
    sql = REPLICATED_RE.sub(r"ENGINE = \1(", sql)
    return DISTRIBUTED_RE.sub(r"ENGINE = Merge('\1', '^\2$')", sql)


@pytest.fixture
def cluster_replay(ch: Any) -> Iterator[str]:
    """A database built from the parsed cluster DDL with stand-ins for what chDB lacks."""
    db = f"t_{uuid.uuid4().hex[:12]}"
    statements = script_statements(migration_script(db, CLUSTER))
    try:
        for stmt in statements:
            runnable = standin(parse(ch, stmt))
            if runnable is not None:
                ch.command(runnable)
        yield db
    finally:
        ch.command(f"DROP DATABASE IF EXISTS {db}")


def tables(ch: Any, db: str) -> dict[str, dict[str, Any]]:
    rows = ch.query(
        "SELECT name, engine, sorting_key, primary_key, partition_key, sampling_key, "
        "replaceAll(as_select, {db:String}, 'DB') FROM system.tables WHERE database = {db:String}",
        parameters={"db": db},
    ).result_rows
    out = {}
    for name, engine, sorting, primary, partition, sampling, select in rows:
        out[name] = {
            "engine": engine,
            "keys": (sorting, primary, partition, sampling),
            "select": select,
        }
    return out


def columns(ch: Any, db: str, table: str) -> list[tuple[Any, ...]]:
    return [
        tuple(r)
        for r in ch.query(
            "SELECT name, type, default_kind, default_expression, compression_codec, comment "
            "FROM system.columns WHERE database = {db:String} AND table = {t:String} "
            "ORDER BY position",
            parameters={"db": db, "t": table},
        ).result_rows
    ]


# ------------------------------------------------------------- the parser


@pytest.mark.parametrize("cluster", [CLUSTER, "prod-eu.1"])
def test_every_rendered_cluster_statement_parses(ch: Any, cluster: str) -> None:
    statements = script_statements(migration_script("audit", cluster))
    rendered = [s for m in load_migrations("audit", cluster) for s in m.statements]
    assert len(statements) > len(rendered) > 0
    for stmt in statements:
        formatted = parse(ch, stmt)
        if not stmt.startswith("INSERT"):
            assert ON_CLUSTER_RE.search(formatted.split("\n", 1)[0]), formatted
    assert any("ReplicatedReplacingMergeTree(" in parse(ch, s) for s in rendered)
    assert any("ENGINE = Distributed(" in parse(ch, s) for s in rendered)


def test_the_parser_check_has_teeth(ch: Any) -> None:
    from clickhouse_connect.driver.exceptions import DatabaseError

    good = next(s for m in load_migrations("audit", CLUSTER) for s in m.statements)
    parse(ch, good)
    with pytest.raises(DatabaseError, match="Syntax error"):
        parse(ch, good.replace(" ON CLUSTER c", " ON CLUSTER", 1))


def test_migrate_cluster_print_emits_ddl_the_parser_accepts(ch: Any) -> None:
    """Done when: `decision-audit migrate --cluster c --print` emits DDL the engine parses."""
    out = subprocess.run(
        [*CLI, "migrate", "--cluster", CLUSTER, "--print"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    statements = script_statements(out.stdout)
    expected = len(script_statements(migration_script("audit", CLUSTER)))
    assert len(statements) == expected
    for stmt in statements:
        parse(ch, stmt)


# ------------------------------------------------------------- both layouts' tables


def test_single_node_and_cluster_tables_have_the_same_columns_and_keys(
    ch: Any, database: str, cluster_replay: str
) -> None:
    single = tables(ch, database)
    many = tables(ch, cluster_replay)
    views = {n for n, t in single.items() if t["engine"] in ("MaterializedView", "View")}
    stored = set(single) - views - {TRACKING_TABLE}
    assert stored >= {
        "decisions",
        "checkpoints",
        "decisions_hourly",
        "chain_heads",
        "verify_runs",
        "replays",
        "subject_keys",
        "erasures",
        "legal_holds",
        "retention_prunings",
        "retention_runs",
        "witness_statements",
    }, sorted(single)
    assert set(many) == set(single) | {f"{t}_local" for t in stored}
    for table in stored:
        expected = columns(ch, database, table)
        assert columns(ch, cluster_replay, f"{table}_local") == expected, table
        assert columns(ch, cluster_replay, table) == expected, f"{table} (Distributed)"
        assert many[f"{table}_local"]["keys"] == single[table]["keys"], table
        assert many[f"{table}_local"]["engine"] == single[table]["engine"], table
        assert many[table]["engine"] == "Merge"  # the stand-in of Distributed
    for view in views:
        select, engine = many[view]["select"], single[view]["engine"]
        assert many[view]["engine"] == engine, view
        if engine == "MaterializedView":  # between the local tables, on every shard
            assert select == re.sub(r"\bDB\.(\w+)", r"DB.\1_local", single[view]["select"]), view
            continue
        # A plain view reads the Distributed tables; its JOINs over them are GLOBAL (the rows
        # to match may be on any shard), and it runs.
        assert select.replace("GLOBAL ", "") == single[view]["select"], view
        joins = re.findall(rf"\b(GLOBAL )?(?:(?:{JOIN_WORDS}) )*JOIN DB\.(\w+)", select)
        assert joins, view
        assert all(g for g, t in joins if t in stored), (view, joins)
        ch.query(f"SELECT count() FROM {cluster_replay}.{view}")
    assert columns(ch, cluster_replay, TRACKING_TABLE) == columns(ch, database, TRACKING_TABLE)


# ------------------------------------------------------------- the tools' queries


CONTRACT_TABLES = {
    t
    for k in RECORD_KINDS
    for t in (*k.tables, *((k.chain.checkpoints,) if k.chain is not None else ()))
}
"""the tables of the contract's record kinds (decision_audit.contract.fields)"""


def _sql_tables_in_python(path: Path) -> set[str]:
    """Tables the SQL in ``path`` names: ``FROM {db}.x``, ``INTO {db}.x``, ``"{db}.x"``, for
    ``{db}.{table}`` the constants its functions' ``table`` parameter receives, and for
    ``{db}.{kind.table}`` or ``{db}.{kind.chain.checkpoints}`` every record kind's tables."""
    text = path.read_text(encoding="utf-8")
    found = set(re.findall(r"\b(?:FROM|INTO|JOIN|TABLE)\s+\{[^{}]+\}\.([A-Za-z_]\w*)", text))
    found |= set(re.findall(r"[\"']\{[^{}]+\}\.([A-Za-z_]\w*)[\"']", text))
    if re.search(r"\{[^{}]+\}\.\{\w+\.(?:table|chain\.checkpoints)\}", text):
        found |= CONTRACT_TABLES
    return found


def _table_arguments(paths: list[Path]) -> set[str]:
    """String constants passed to (or defaulted for) a parameter named ``table``."""
    trees = [ast.parse(p.read_text(encoding="utf-8")) for p in paths]
    positions: dict[str, int] = {}
    found: set[str] = set()
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                names = [a.arg for a in node.args.args]
                offset = 1 if names[:1] in (["self"], ["cls"]) else 0
                if "table" not in names:
                    continue
                index = names.index("table")
                positions[node.name] = index - offset
                defaults = node.args.defaults
                first_default = len(names) - len(defaults)
                if index >= first_default:
                    default = defaults[index - first_default]
                    if isinstance(default, ast.Constant) and isinstance(default.value, str):
                        found.add(default.value)
    for tree in trees:
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if name not in positions:
                continue
            args = [*node.args[positions[name] : positions[name] + 1]]
            args += [k.value for k in node.keywords if k.arg == "table"]
            for arg in args:
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    found.add(arg.value)
    return found


def queried_tables() -> dict[str, set[str]]:
    """Tables named by the SQL the worker, the audit tools, the CLI and the dashboards run."""
    paths = sorted(
        p for folder in ("audit", "worker", "cli") for p in (CONSUMERS / folder).rglob("*.py")
    )
    out: dict[str, set[str]] = {}
    for path in paths:
        for table in _sql_tables_in_python(path):
            out.setdefault(table, set()).add(str(path.relative_to(ROOT)))
    for table in _table_arguments(paths):
        out.setdefault(table, set()).add("a table= argument")
    for board in DASHBOARDS.glob("*.json"):
        text = json.dumps(json.loads(board.read_text(encoding="utf-8")))
        for table in re.findall(r"\$\{database\}\.([A-Za-z_]\w*)", text):
            out.setdefault(table, set()).add(str(board.relative_to(ROOT)))
    return out


def test_the_tools_query_tables_that_exist_in_both_layouts(
    ch: Any, database: str, cluster_replay: str
) -> None:
    queried = queried_tables()
    assert set(queried) >= {
        "decisions",
        "checkpoints",
        "incidents",
        "quarantine",
        "model_events",
        "model_event_checkpoints",
        "outcomes",
        "outcome_checkpoints",
        "reviews",
        "review_checkpoints",
        "decision_outcomes",
        "decision_reviews",
        "access_log",
        "decisions_hourly",
        "quarantine_hourly",
        "incidents_hourly",
        "chain_heads",
        "verify_runs",
        "replays",
        "subject_keys",
        "erasures",
        "legal_holds",
        "retention_prunings",
        "retention_runs",
        "witness_statements",
        TRACKING_TABLE,
    }, sorted(queried)
    single = set(tables(ch, database))
    many = set(tables(ch, cluster_replay))
    for table, where in sorted(queried.items()):
        assert not table.endswith("_local"), f"{sorted(where)} address a shard's table {table}"
        assert table in single, f"{table} ({sorted(where)}) is no single-node table"
        assert table in many, f"{table} ({sorted(where)}) is no cluster table"


# ------------------------------------------------------------- the tools' mutations


def test_erasure_deletes_keys_on_every_shard_of_a_cluster(ch: Any) -> None:
    """erase and the key filer delete through ``delete_keys``: on a cluster, an ON CLUSTER
    mutation of every shard's local table (a Distributed table takes no DELETE)."""
    from datetime import UTC, datetime

    from decision_audit.clickhouse.tables import delete_keys_statements

    sub = "ab" * 32
    at = datetime(2026, 5, 1, 12, 0, 0, 123000, tzinfo=UTC)
    one = delete_keys_statements("audit", sub, at)
    many = delete_keys_statements("audit", sub, at, CLUSTER)
    assert len(one) == len(many) == 1
    single, cluster = parse(ch, one[0]), parse(ch, many[0])
    assert single.startswith("ALTER TABLE audit.subject_keys\n"), single
    assert cluster.startswith(f"ALTER TABLE audit.subject_keys_local ON CLUSTER {CLUSTER}\n")
    assert single.split("\n", 1)[1] == cluster.split("\n", 1)[1]  # the same DELETE
    assert f"'{sub}'" in single and "2026-05-01 12:00:00.123" in single
    with pytest.raises(ValueError, match="not a subject hash"):
        delete_keys_statements("audit", "x' OR 1 = 1 --", at)
