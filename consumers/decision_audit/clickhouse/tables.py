"""What the worker and the audit tools both know of the audit tables, written once.

The incidents' columns (the worker and ``reconcile`` insert them), the lifecycle facts the
promotion rule reads from ``model_events`` (the worker's guard rail, ``gate`` and
``trace``), and the deletion of a subject's keys (the key filer and ``erase``).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from decision_audit.clickhouse.cluster import quote_str
from decision_audit.clickhouse.migrate import cluster_statements
from decision_audit.contract.promotion import GATE_ACTIONS, Fact
from decision_audit.contract.sealing import SUBJECT_HASH_RE

INCIDENT_COLUMNS = (
    "kind",
    "producer_id",
    "producer_epoch",
    "seq_from",
    "seq_to",
    "detail",
    "source_partition",
    "source_offset",
)
"""the columns of ``incidents`` the worker and ``reconcile`` write"""


def stored_facts(client: Any, database: str, versions: set[str]) -> dict[str, list[Fact]]:
    """The stored :data:`GATE_ACTIONS` events about each of ``versions`` (by subject, else
    a related model_version reference, like
    :func:`decision_audit.contract.promotion.model_version_of`)."""
    if not versions:
        return {}
    rows = client.query(
        "SELECT if(subject_type = 'model_version', subject_id, "
        "arrayFirst(r -> r.1 = 'model_version', related).2) AS version, "
        f"occurred_at, action, actor, metadata FROM {database}.model_events FINAL "
        "WHERE action IN {a:Array(String)} AND version IN {v:Array(String)}",
        parameters={"a": list(GATE_ACTIONS), "v": sorted(versions)},
    ).result_rows
    out: dict[str, list[Fact]] = {}
    for version, ts, action, actor, meta in rows:
        out.setdefault(str(version), []).append(Fact(ts, str(action), str(actor), json.loads(meta)))
    return out


def delete_keys(
    client: Any, database: str, sub: str, until: datetime, cluster: str | None = None
) -> None:
    """Delete subject ``sub``'s keys of decisions up to ``until``, synchronously on every
    replica (a mutation: physical once its parts are cleaned up, see migration 0012)."""
    for stmt in delete_keys_statements(database, sub, until, cluster):
        client.command(stmt, settings={"mutations_sync": 2})


def delete_keys_statements(
    database: str, sub: str, until: datetime, cluster: str | None = None
) -> tuple[str, ...]:
    """The statements of :func:`delete_keys`: on a ``cluster``, an ``ON CLUSTER`` mutation of
    every shard's local table (a Distributed table takes no DELETE).

    The values are written into the statement (``sub`` is checked to be a subject hash):
    an ``ON CLUSTER`` statement is queued for the other servers as text.
    """
    if not SUBJECT_HASH_RE.match(sub):
        raise ValueError(f"not a subject hash: {sub!r}")
    utc = until.replace(tzinfo=UTC) if until.tzinfo is None else until.astimezone(UTC)
    at = utc.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    sql = (
        f"ALTER TABLE {database}.subject_keys DELETE WHERE subject_hash = {quote_str(sub)} "
        f"AND occurred_at <= toDateTime64({quote_str(at)}, 3, 'UTC')"
    )
    return cluster_statements(sql, database, cluster)
