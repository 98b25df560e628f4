"""The cluster rendering of the migrations, without an engine: what each statement becomes.

tests/integration/test_cluster_ddl.py has ClickHouse's own parser read every rendered
statement and compares both layouts' tables.
"""

from __future__ import annotations

import re

import pytest
from click.testing import CliRunner

from decision_audit.cli.main import main
from decision_audit.clickhouse.cluster import ClusterRenderer, ClusterRenderError
from decision_audit.clickhouse.migrate import (
    TRACKING_TABLE,
    Migration,
    load_migrations,
    migration_script,
    tracking_statements,
)
from decision_audit.clickhouse.settings import MigrateSettings

DB = "audit"
CLUSTER = "c"
CREATE_TABLE_RE = re.compile(
    r"^CREATE TABLE (?:IF NOT EXISTS )?(?P<db>\w+)\.(?P<table>\w+)(?P<rest>.*)$", re.S
)
ENGINE_RE = re.compile(r"\bENGINE\s*=?\s*(?P<engine>\w+)(?:\((?P<args>[^)]*)\))?")


def statements(migrations: list[Migration]) -> list[str]:
    return [s for m in migrations for s in m.statements]


def single() -> list[str]:
    return statements(load_migrations(DB))


def cluster(name: str = CLUSTER) -> list[str]:
    return statements(load_migrations(DB, name))


def created_tables(stmts: list[str]) -> dict[str, str]:
    """table -> its CREATE TABLE statement."""
    out = {}
    for s in stmts:
        m = CREATE_TABLE_RE.match(s)
        if m:
            out[m["table"]] = s
    return out


def render(*sql: str, cluster_name: str = CLUSTER) -> list[str]:
    r = ClusterRenderer(DB, cluster_name)
    return [out for s in sql for out in r.render(s)]


# ------------------------------------------------------------- the shipped migrations


def test_every_shipped_migration_renders_for_a_cluster() -> None:
    one, many = load_migrations(DB), load_migrations(DB, CLUSTER)
    assert [(m.version, m.name) for m in one] == [(m.version, m.name) for m in many]
    assert all(m.statements for m in many)
    assert len(cluster()) > len(single())


def test_the_single_node_rendering_is_the_files_as_they_are() -> None:
    assert load_migrations(DB) == load_migrations(DB, None)
    assert any("non_replicated_deduplication_window = 10000" in s for s in single())


def test_every_ddl_statement_runs_on_the_cluster() -> None:
    for s in cluster():
        head = s.split("(", 1)[0].split("\n", 1)[0]
        if s.startswith("INSERT"):
            assert "ON CLUSTER" not in head, s
        else:
            assert re.search(rf"\bON CLUSTER {CLUSTER}\b", head), s


def test_merge_tree_tables_become_replicated_local_tables_behind_distributed_ones() -> None:
    one = created_tables(single())
    many = created_tables(cluster())
    assert set(one), "no tables in the migrations"
    for table, ddl in one.items():
        engine = ENGINE_RE.search(ddl)
        assert engine is not None and engine["engine"].endswith("MergeTree"), ddl
        local = many[f"{table}_local"]
        replicated = ENGINE_RE.search(local)
        assert replicated is not None
        assert replicated["engine"] == "Replicated" + engine["engine"], local
        path, replica, *rest = [a.strip() for a in replicated["args"].split(",")]
        assert path == f"'/clickhouse/tables/{{shard}}/{DB}/{table}_local'"
        assert replica == "'{replica}'"
        assert rest == [a.strip() for a in (engine["args"] or "").split(",") if a.strip()]
        distributed = many[table]
        assert f"AS {DB}.{table}_local" in distributed
        assert f"ENGINE = Distributed('{CLUSTER}', '{DB}', '{table}_local', " in distributed


def top_level_columns(ddl: str) -> set[str]:
    """The columns a CREATE TABLE lists (not the fields of a Nested or Tuple column)."""
    body = ddl[ddl.index("(") + 1 :]
    names, depth, item = set(), 0, ""
    for ch in body:
        if depth == 0 and ch in ",)":
            names.add(item.split()[0])
            item = ""
            if ch == ")":
                return names
            continue
        depth += {"(": 1, ")": -1}.get(ch, 0)
        item += ch
    raise AssertionError(f"no column list in: {ddl}")


def test_chains_stay_on_one_shard() -> None:
    for table, ddl in created_tables(single()).items():
        columns = top_level_columns(ddl)
        distributed = created_tables(cluster())[table]
        if "producer_id" in columns:
            assert distributed.endswith(", cityHash64(producer_id))"), distributed
        else:
            order = re.search(r"ORDER BY \((.*)\)", ddl)
            assert order is not None, ddl
            assert distributed.endswith(f", cityHash64({order[1]}))"), distributed


def test_decisions_and_checkpoints_share_the_sharding_key() -> None:
    # verify reads a chain's events and checkpoints; both must sit on the chain's shard
    keys = ClusterRenderer(DB, CLUSTER)
    for s in single():
        keys.render(s)
    chained = ("decisions", "checkpoints", "model_events", "model_event_checkpoints")
    assert {keys.sharded[t] for t in chained} == {"cityHash64(producer_id)"}
    assert keys.sharded["incidents"] == "cityHash64(producer_id)"
    # the worker reads its chains' heads; they sit on the shard of the chain's events
    assert keys.sharded["chain_heads"] == "cityHash64(producer_id)"


def test_replicated_tables_deduplicate_natively() -> None:
    rendered = cluster()
    assert not any("non_replicated_deduplication_window" in s for s in rendered)
    windows = [s for s in single() if "non_replicated_deduplication_window" in s]
    replicated = [s for s in rendered if "replicated_deduplication_window = 10000" in s]
    assert len(replicated) == len(windows) > 0


def test_rollups_are_kept_per_shard_between_local_tables() -> None:
    views = [s for s in cluster() if s.startswith("CREATE MATERIALIZED VIEW")]
    assert views
    for view in views:
        target = re.search(r"\bTO (\w+)\.(\w+)", view)
        source = re.search(r"\bFROM (\w+)\.(\w+)", view)
        assert target and source, view
        assert target[2].endswith("_local") and source[2].endswith("_local"), view


def test_backfills_go_through_distributed_tables_synchronously() -> None:
    inserts = [s for s in cluster() if s.startswith("INSERT")]
    assert inserts
    for s in inserts:
        assert re.match(r"INSERT INTO audit\.\w+ SETTINGS distributed_foreground_insert = 1\n", s)
        assert "_local" not in s, s


def test_column_changes_alter_both_tables() -> None:
    alters = [s for s in cluster() if s.startswith("ALTER")]
    local = [
        s for s in alters if s.startswith("ALTER TABLE audit.decisions_local ") and " COLUMN " in s
    ]
    distributed = [s for s in alters if s.startswith("ALTER TABLE audit.decisions ")]
    # Indexes, projections and settings are the local tables' only (migration 0015).
    assert all(" COLUMN " in s for s in distributed)
    assert any(" PROJECTION " in s for s in alters if "decisions_local" in s)
    single = [
        s
        for m in load_migrations(DB)
        for s in m.statements
        if s.split()[:3] == ["ALTER", "TABLE", f"{DB}.decisions"] and " COLUMN " in s
    ]
    assert len(local) == len(distributed) == len(single) >= 4  # key_id, three codecs, ...
    on = f" ON CLUSTER {CLUSTER}"
    for a, b in zip(local, distributed, strict=True):
        assert " ".join(a.split(on, 1)[1].split()) == " ".join(b.split(on, 1)[1].split())


def test_tracking_table_is_replicated_to_every_server() -> None:
    db, table = tracking_statements(DB, CLUSTER)
    assert db == f"CREATE DATABASE IF NOT EXISTS {DB} ON CLUSTER {CLUSTER}"
    assert f"{DB}.{TRACKING_TABLE} ON CLUSTER {CLUSTER} " in table
    assert (
        f"ReplicatedReplacingMergeTree('/clickhouse/tables/all/{DB}/{TRACKING_TABLE}', "
        "'{shard}-{replica}')"
    ) in table
    assert "Distributed" not in table
    assert tracking_statements(DB)[1].endswith("ENGINE = ReplacingMergeTree ORDER BY version")


def test_a_cluster_name_that_is_no_identifier_is_quoted() -> None:
    rendered = cluster("prod-eu.1")
    assert "CREATE DATABASE IF NOT EXISTS audit ON CLUSTER `prod-eu.1`" in rendered
    engine = "ENGINE = Distributed('prod-eu.1', 'audit', 'decisions_local'"
    assert any(engine in s for s in rendered)


# ------------------------------------------------------------- statements to come


def test_a_later_migration_is_rendered_too() -> None:
    """The shapes a migration adds next (a chain-head rollup, a verify-runs log) render."""
    out = render(
        "CREATE TABLE IF NOT EXISTS audit.decisions (producer_id String, seq UInt64, "
        "event_hash FixedString(32)) ENGINE = ReplacingMergeTree ORDER BY (producer_id, seq)",
        "CREATE TABLE IF NOT EXISTS audit.chain_heads (producer_id String, producer_epoch UInt64,"
        " head AggregateFunction(argMax, FixedString(32), UInt64)) ENGINE = AggregatingMergeTree"
        " ORDER BY (producer_id, producer_epoch)",
        "CREATE MATERIALIZED VIEW IF NOT EXISTS audit.chain_heads_mv TO audit.chain_heads AS "
        "SELECT producer_id, 0 AS producer_epoch, argMaxState(event_hash, seq) AS head "
        "FROM audit.decisions GROUP BY producer_id",
        "CREATE TABLE IF NOT EXISTS audit.verify_runs (run_id UUID, started_at DateTime64(3), "
        "ok Bool) ENGINE = MergeTree PARTITION BY toYYYYMM(started_at) ORDER BY started_at "
        "TTL toDateTime(started_at) + INTERVAL 1 YEAR",
    )
    heads = next(s for s in out if s.startswith("CREATE TABLE IF NOT EXISTS audit.chain_heads "))
    assert heads.endswith("'chain_heads_local', cityHash64(producer_id))")
    mv = next(s for s in out if s.startswith("CREATE MATERIALIZED VIEW"))
    assert "TO audit.chain_heads_local AS" in mv and "FROM audit.decisions_local " in mv
    runs = next(s for s in out if s.startswith("CREATE TABLE IF NOT EXISTS audit.verify_runs_"))
    assert "ReplicatedMergeTree('/clickhouse/tables/{shard}/audit/verify_runs_local'" in runs
    assert runs.endswith("TTL toDateTime(started_at) + INTERVAL 1 YEAR")
    assert out[-1].endswith("'verify_runs_local', cityHash64(started_at))")


def test_alter_commands_a_distributed_table_cannot_take_stay_local() -> None:
    out = render(
        "CREATE TABLE audit.t (k UInt8, v String) ENGINE = MergeTree ORDER BY k",
        "ALTER TABLE audit.t ADD INDEX i v TYPE bloom_filter GRANULARITY 1, "
        "MODIFY TTL now() + INTERVAL 1 DAY",
        "ALTER TABLE audit.t ADD COLUMN w UInt8, MATERIALIZE INDEX i, "
        "MODIFY SETTING non_replicated_deduplication_window = 5",
    )
    assert out[2] == (
        "ALTER TABLE audit.t_local ON CLUSTER c ADD INDEX i v TYPE bloom_filter GRANULARITY 1, "
        "MODIFY TTL now() + INTERVAL 1 DAY"
    )
    assert out[3] == (
        "ALTER TABLE audit.t_local ON CLUSTER c ADD COLUMN w UInt8, MATERIALIZE INDEX i, "
        "MODIFY SETTING replicated_deduplication_window = 5"
    )
    assert out[4] == "ALTER TABLE audit.t ON CLUSTER c\n    ADD COLUMN w UInt8"
    assert len(out) == 5


def test_engine_arguments_follow_the_replication_arguments() -> None:
    (local, _) = render(
        "CREATE TABLE audit.t (k UInt8, ver UInt64, gone UInt8) "
        "ENGINE = ReplacingMergeTree(ver, gone) ORDER BY k"
    )
    assert (
        "ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/audit/t_local', "
        "'{replica}', ver, gone) ORDER BY k"
    ) in local


def test_inserts_keep_their_settings() -> None:
    out = render(
        "CREATE TABLE audit.t (k UInt8) ENGINE = MergeTree ORDER BY k",
        "INSERT INTO audit.t (k) SETTINGS max_threads = 1 SELECT 1",
        "INSERT INTO audit.schema_migrations (version, name) VALUES (1, 'x')",
    )
    assert out[2] == (
        "INSERT INTO audit.t (k) SETTINGS max_threads = 1, distributed_foreground_insert = 1 "
        "SELECT 1"
    )
    assert out[3] == "INSERT INTO audit.schema_migrations (version, name) VALUES (1, 'x')"


def test_dropping_a_table_drops_both_at_once() -> None:
    out = render(
        "CREATE TABLE audit.t (k UInt8) ENGINE = MergeTree ORDER BY k",
        "DROP TABLE IF EXISTS audit.t",
        "CREATE TABLE audit.t (k UInt8) ENGINE = MergeTree ORDER BY k",
    )
    assert out[2:4] == [
        "DROP TABLE IF EXISTS audit.t ON CLUSTER c",
        "DROP TABLE IF EXISTS audit.t_local ON CLUSTER c SYNC",
    ]
    assert out[4].startswith("CREATE TABLE audit.t_local ON CLUSTER c")


def test_views_read_through_the_distributed_tables() -> None:
    out = render(
        "CREATE TABLE audit.t (k UInt8) ENGINE = MergeTree ORDER BY k",
        "CREATE VIEW IF NOT EXISTS audit.v AS SELECT k FROM audit.t FINAL",
    )
    assert out[2] == "CREATE VIEW IF NOT EXISTS audit.v ON CLUSTER c AS SELECT k FROM audit.t FINAL"


def test_a_view_joins_and_filters_sharded_tables_globally() -> None:
    """Rows to match may be on any shard, and ClickHouse refuses a JOIN of two Distributed
    tables (distributed_product_mode = 'deny'): a view's JOIN or IN over one is GLOBAL."""
    r = ClusterRenderer(DB, CLUSTER)
    for table in ("t", "u"):
        r.render(f"CREATE TABLE audit.{table} (k UInt8) ENGINE = MergeTree ORDER BY k")
    r.render("CREATE TABLE audit.schema_migrations (k UInt8) ENGINE = MergeTree ORDER BY k")
    cases = {
        "SELECT t.k FROM audit.t AS t FINAL INNER JOIN audit.u AS u FINAL ON u.k = t.k": (
            "GLOBAL INNER JOIN audit.u"
        ),
        "SELECT k FROM audit.t ANY LEFT OUTER JOIN audit.u USING k": "GLOBAL ANY LEFT OUTER JOIN",
        "SELECT k FROM audit.t JOIN (SELECT k FROM audit.u) USING k": "GLOBAL JOIN (SELECT",
        "SELECT k FROM audit.t WHERE k NOT IN (SELECT k FROM audit.u)": "k GLOBAL NOT IN (",
        "SELECT k FROM audit.t WHERE k IN audit.u": "k GLOBAL IN audit.u",
        "SELECT k FROM audit.t GLOBAL JOIN audit.u USING k": "t GLOBAL JOIN audit.u",
    }
    for query, rendered in cases.items():
        (out,) = r.render(f"CREATE VIEW audit.v AS {query}")
        assert rendered in out, out
        assert out.count("GLOBAL") == 1 and out.count("_local") == 0, out
    # Neither a table replicated to every server nor a constant list is sharded; an explicit
    # LOCAL JOIN is as written.
    for query in (
        "SELECT k FROM audit.t LOCAL JOIN audit.u USING k",
        "SELECT k FROM audit.t JOIN audit.schema_migrations USING k",
        "SELECT k FROM audit.t WHERE k IN (1, 2) AND k IN (SELECT k FROM audit.schema_migrations)",
    ):
        (out,) = r.render(f"CREATE VIEW audit.v AS {query}")
        assert "GLOBAL" not in out, out


def test_the_shipped_join_views_are_global() -> None:
    views = [s for s in cluster() if s.startswith("CREATE VIEW")]
    assert views
    for view in views:
        assert "GLOBAL INNER JOIN audit." in view and " INNER JOIN" not in view.replace(
            "GLOBAL INNER JOIN", ""
        ), view


@pytest.mark.parametrize(
    ("sql", "says"),
    [
        ("RENAME TABLE audit.a TO audit.b", "no cluster rendering for: RENAME TABLE"),
        ("CREATE TABLE audit.m (a UInt8) ENGINE = Memory", "engine Memory has no replicated"),
        ("CREATE TABLE audit.m ENGINE = MergeTree ORDER BY a AS SELECT 1 AS a", "columns listed"),
        ("CREATE TABLE m (a UInt8) ENGINE = MergeTree ORDER BY a", "name its database"),
        ("CREATE TABLE other.m (a UInt8) ENGINE = MergeTree ORDER BY a", "database 'other'"),
        (
            "CREATE MATERIALIZED VIEW audit.v ENGINE = MergeTree ORDER BY a AS SELECT 1 AS a",
            "write it with TO <table>",
        ),
        (
            "CREATE MATERIALIZED VIEW audit.v TO audit.t POPULATE AS SELECT 1 AS a",
            "POPULATE",
        ),
    ],
)
def test_statements_without_a_cluster_rendering_say_so(sql: str, says: str) -> None:
    with pytest.raises(ClusterRenderError, match=re.escape(says)):
        render(sql)


# ------------------------------------------------------------- the script and the command


def script_statements(text: str) -> list[str]:
    body = "\n".join(line for line in text.splitlines() if not line.startswith("--"))
    return [s.strip() for s in re.split(r";\s*$", body, flags=re.M) if s.strip()]


@pytest.mark.parametrize("cluster_name", [None, CLUSTER])
def test_the_script_is_what_migrate_runs(cluster_name: str | None) -> None:
    migrations = load_migrations(DB, cluster_name)
    expected = list(tracking_statements(DB, cluster_name))
    for mig in migrations:
        expected += mig.statements
        expected.append(
            f"INSERT INTO {DB}.{TRACKING_TABLE} (version, name) "
            f"VALUES ({mig.version}, '{mig.name}')"
        )
    assert script_statements(migration_script(DB, cluster_name)) == expected


def test_migrate_print_connects_to_nothing() -> None:
    # The default DSN is chDB: opening it here would fail this unmarked test (conftest).
    result = CliRunner().invoke(main, ["migrate", "--cluster", CLUSTER, "--print"])
    assert result.exit_code == 0, result.output
    assert result.output == migration_script("audit", CLUSTER)
    single_node = CliRunner().invoke(main, ["migrate", "--print", "--database", "d1"])
    assert single_node.exit_code == 0, single_node.output
    assert single_node.output == migration_script("d1")


def test_migrate_reads_the_cluster_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DECISION_AUDIT_CLUSTER", "from_env")
    assert MigrateSettings().cluster == "from_env"
    result = CliRunner().invoke(main, ["migrate", "--print"])
    assert result.exit_code == 0, result.output
    assert "ON CLUSTER from_env" in result.output


def test_migrate_on_a_cluster_needs_a_server(tmp_path: object) -> None:
    result = CliRunner().invoke(
        main, ["migrate", "--cluster", CLUSTER, "--clickhouse-url", f"chdb://{tmp_path}"]
    )
    assert result.exit_code == 2, result.output
    (line,) = result.output.strip().splitlines()
    assert "--cluster c needs a ClickHouse server" in line and "--print" in line


@pytest.mark.parametrize("bad", ["a b", "x;DROP", "-c", ""])
def test_cluster_names_are_checked(bad: str) -> None:
    result = CliRunner().invoke(main, ["migrate", "--cluster", bad, "--print"])
    assert result.exit_code == 2
    assert "--cluster" in result.output
