"""Every Grafana panel's SQL runs against chDB on the migrated schema, with data in it.

The dashboard JSON and the provisioning files under deploy/grafana are parsed; each
ClickHouse panel's query gets Grafana's macros and template variables substituted the way
the ClickHouse plugin does, and must run and return rows. Prometheus panels must name
metrics the worker exports.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from decision_audit.contract.ids import uuid7
from decision_audit.worker.metrics import WorkerMetrics

ROOT = Path(__file__).resolve().parent.parent
GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
CLICKHOUSE_PLUGIN = "grafana-clickhouse-datasource"
MODELS = ("credit-risk", "fraud")


def _datasources() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for path in (GRAFANA / "provisioning" / "datasources").glob("*.yml"):
        for ds in yaml.safe_load(path.read_text())["datasources"]:
            found[ds["uid"]] = ds
    return found


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for panel in dashboard["panels"]:
        out.extend(panel.get("panels", []) if panel["type"] == "row" else [panel])
    return out


def substitute(sql: str, database: str, start: datetime, end: datetime) -> str:
    """Grafana + ClickHouse-plugin macros and this dashboard's template variables."""
    frm, to = int(start.timestamp()), int(end.timestamp())
    sql = re.sub(
        r"\$__timeFilter\(([^)]+)\)",
        lambda m: f"{m[1]} >= toDateTime({frm}) AND {m[1]} <= toDateTime({to})",
        sql,
    )
    sql = sql.replace("$__fromTime", f"toDateTime({frm})").replace("$__toTime", f"toDateTime({to})")
    sql = sql.replace("$__interval_s", "3600")
    sql = sql.replace("${model:singlequote}", ",".join(f"'{m}'" for m in MODELS))
    sql = sql.replace("${database}", database).replace("$database", database)
    assert "$" not in sql, f"unsubstituted macro or variable left in:\n{sql}"
    return sql


def _follow_up(table: str, n: int) -> str:
    """The verdict of the ``n``-th review, or the actual value of the ``n``-th outcome."""
    if table == "reviews":
        return "override" if n % 5 == 0 else "confirm"
    return "decline" if n % 4 < 2 else "approve"


def _utc(t: datetime) -> datetime:
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


@pytest.fixture
def filled(ch: Any, database: str) -> tuple[str, datetime, datetime]:
    """Base-table rows for two models over three hours; the rollups fill on insert."""
    now = datetime.now(UTC).replace(microsecond=0)
    start = now - timedelta(hours=3)
    rows = []
    for i in range(300):
        rows.append(
            [
                uuid7(),
                start + timedelta(seconds=30 * i),
                MODELS[i % 2],
                str(1 + i % 3),
                "approve" if i % 3 else "decline",
                (i % 100) / 100,
                1.0 + i % 17,
                "p",
                1,
                i + 1,
                "error" if i % 10 == 0 else "ok",
            ]
        )
    ch.insert(
        f"{database}.decisions",
        rows,
        column_names=[
            "event_id", "occurred_at", "model_name", "model_version", "prediction", "score",
            "latency_ms", "producer_id", "producer_epoch", "seq", "status",
        ],
    )  # fmt: skip
    # An outcome and a review of every third decision (version 1, predicted "decline"): half
    # the outcomes agree with the prediction, a fifth of the reviews override it.
    for table, value in (("outcomes", "actual"), ("reviews", "verdict")):
        ch.insert(
            f"{database}.{table}",
            [
                [uuid7(), now, str(r[0]), _follow_up(table, n), f"p/{table}", 1, n + 1]
                for n, r in enumerate(rows[::3])
            ],
            column_names=[
                "event_id", "occurred_at", "decision_id", value, "producer_id", "producer_epoch",
                "seq",
            ],
        )  # fmt: skip
    ch.insert(
        f"{database}.quarantine",
        [
            ["decisions", 0, i, None, "hash_mismatch" if i % 2 else "bad_magic", "x", b""]
            for i in range(6)
        ],
        column_names=[
            "source_topic", "source_partition", "source_offset", "message_key", "reason",
            "detail", "raw",
        ],
    )  # fmt: skip
    ch.insert(
        f"{database}.incidents",
        [
            ["seq_gap", "p", 1, 5, 6, "2 missing", 0, 9],
            ["unapproved_promotion", "p/model-events", 1, 3, 3, "x", 0, 3],
        ],
        column_names=[
            "kind", "producer_id", "producer_epoch", "seq_from", "seq_to", "detail",
            "source_partition", "source_offset",
        ],
    )  # fmt: skip
    ch.insert(
        f"{database}.model_events",
        [
            [
                uuid7(), now - timedelta(hours=1), "promote", "carol", "model_version",
                "credit-risk@2", [("run", "run-2")], "{}", "p/model-events", 1, 1,
            ]
        ],
        column_names=[
            "event_id", "occurred_at", "action", "actor", "subject_type", "subject_id",
            "related", "metadata", "producer_id", "producer_epoch", "seq",
        ],
    )  # fmt: skip
    return database, start - timedelta(minutes=5), now + timedelta(minutes=5)


def test_dashboards_exist_and_use_provisioned_datasources() -> None:
    assert DASHBOARDS, "no dashboard JSON under deploy/grafana/dashboards"
    datasources = _datasources()
    assert {ds["type"] for ds in datasources.values()} == {CLICKHOUSE_PLUGIN, "prometheus"}
    provider = yaml.safe_load(
        (GRAFANA / "provisioning" / "dashboards" / "decision-audit.yml").read_text()
    )
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    titles = set()
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text())
        for panel in _panels(dashboard):
            titles.add(panel["title"])
            for target in panel["targets"]:
                uid = (target.get("datasource") or panel["datasource"])["uid"]
                assert uid in datasources, f"{path.name} {panel['title']}: unknown datasource {uid}"
    wanted = {
        "Decisions per model",
        "Prediction mix",
        "Score quantiles",
        "Latency quantiles",
        "Integrity incidents",
        "Quarantine by reason",
        "Consumer lag",
        "Error rate per model version",
        "Outcomes and reviews per model version",
    }
    assert wanted <= titles, wanted - titles


def test_prometheus_panels_name_exported_worker_metrics() -> None:
    exported = {m.name for m in WorkerMetrics().registry.collect()}
    checked = 0
    for path in DASHBOARDS:
        for panel in _panels(json.loads(path.read_text())):
            for target in panel["targets"]:
                if "expr" not in target:
                    continue
                names = set(re.findall(r"\bdecision_audit_[a-z_]+\b", target["expr"]))
                assert names and names <= exported, (panel["title"], names - exported)
                checked += 1
    assert checked, "no Prometheus panel (consumer lag)"


@pytest.mark.integration
def test_every_clickhouse_panel_query_runs_on_the_migrated_schema(
    ch: Any, filled: tuple[str, datetime, datetime]
) -> None:
    database, start, end = filled
    ran = 0
    checked: set[str] = set()
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text())
        for var in dashboard["templating"]["list"]:
            if var["type"] == "query":
                rows = ch.query(substitute(var["query"], database, start, end)).result_rows
                assert {r[0] for r in rows} == set(MODELS), var["name"]
        for panel in _panels(dashboard):
            for target in panel["targets"]:
                if "rawSql" not in target:
                    continue
                sql = substitute(target["rawSql"], database, start, end)
                try:
                    result = ch.query(sql)
                except Exception as exc:
                    pytest.fail(f"{path.name} panel {panel['title']!r} fails: {exc}\n{sql}")
                assert result.result_rows, f"panel {panel['title']!r} returned no rows:\n{sql}"
                ran += 1
                if panel["title"] == "Decisions per model":
                    total = sum(r[2] for r in result.result_rows)
                    assert total == 300
                if panel["title"] == "Quarantine by reason":
                    assert sum(r[2] for r in result.result_rows) == 6
                if panel["title"] == "Error rate per model version":
                    got = {(_utc(t), v): rate for t, v, rate in result.result_rows}
                    assert got == pytest.approx(_error_rates(start + timedelta(minutes=5)))
                    checked.add(panel["title"])
                if panel["title"] == "Outcomes and reviews per model version":
                    _check_follow_ups(result.result_rows)
                    checked.add(panel["title"])
    assert ran >= 8
    assert checked == {"Error rate per model version", "Outcomes and reviews per model version"}


def _error_rates(first: datetime) -> dict[tuple[datetime, str], float]:
    """The fixture's share of failed decisions per hour and model version: status 'error'
    for every tenth decision (i % 10 == 0, all of them credit-risk's)."""
    n: dict[tuple[datetime, str], int] = {}
    failed: dict[tuple[datetime, str], int] = {}
    for i in range(300):
        at = (first + timedelta(seconds=30 * i)).replace(minute=0, second=0)
        key = (at, f"{MODELS[i % 2]}@{1 + i % 3}")
        n[key] = n.get(key, 0) + 1
        failed[key] = failed.get(key, 0) + (i % 10 == 0)
    assert sum(failed.values()) == 30
    return {key: failed[key] / n[key] for key in n}


def _check_follow_ups(rows: list[tuple[Any, ...]]) -> None:
    """Per model and version, 50 decisions; version 1's all have an outcome (half of them
    "decline", as predicted) and a review (a fifth of them overrides), the others none."""
    by_version = {(r[0], r[1]): r[2:] for r in rows}
    assert set(by_version) == {(m, str(v)) for m in MODELS for v in (1, 2, 3)}
    for (_, version), (decisions, with_outcome, accuracy, reviewed, override) in by_version.items():
        assert decisions == 50
        if version == "1":
            assert (with_outcome, accuracy, reviewed) == pytest.approx((1.0, 0.5, 1.0))
            assert override == pytest.approx(0.2)
        else:
            assert (with_outcome, reviewed, override) == (0, 0, None)
