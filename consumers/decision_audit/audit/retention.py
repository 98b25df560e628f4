"""``decision-audit retention`` and ``hold``: keep records for their window, then prune them,
except what a legal hold keeps, and record every pruning so that ``verify`` still proves the
rest of each chain.

A chained record kind (decisions, model events, outcomes, reviews) is pruned by chain, and
only a chain's prefix: up to the last seq before its first event that is within the window
or held. Its boundary (that seq and the event's hash) is written to ``retention_prunings``
before the rows are deleted, after a ``retention_runs`` row saying which window (and whether
below the EU AI Act's floor) the run was given; ``verify`` walks the chain from there
(:func:`chain_starts`), so the first kept event must link to the recorded hash and any other
removal stays a gap, and holds a pruning past a witnessed head to its run (:func:`prunings`).
A chain whose prefix already has a gap is not pruned: the gap stays for ``verify`` to see.
Quarantine, incidents and the access log are pruned by time, one record per run and kind.
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import Field

from decision_audit.audit.access_log import os_user
from decision_audit.clickhouse.cluster import quote_str
from decision_audit.clickhouse.migrate import cluster_statements
from decision_audit.clickhouse.settings import MigrateSettings
from decision_audit.contract.errors import DecisionAuditError
from decision_audit.contract.ids import uuid7
from decision_audit.contract.models import utc_now

EU_AI_ACT_FLOOR_DAYS = 183
"""EU AI Act Art. 19(1)/26(6): logs kept at least six months (183 days covers any six)"""

ZERO_HASH = bytes(32)
DELETE_BATCH = 100
PRUNING_COLUMNS = [
    "pruning_id",
    "run_id",
    "pruned_at",
    "kind",
    "horizon",
    "producer_id",
    "producer_epoch",
    "boundary_seq",
    "boundary_hash",
    "rows",
    "actor",
    "os_user",
    "host",
]
"""the columns of a ``retention_prunings`` row, in the order :func:`_record` writes them"""
"""chains per DELETE mutation"""


@dataclass(frozen=True)
class Pruned:
    """A record kind retention prunes: its table, time column and the hold filters it has."""

    table: str
    time: str
    chained: bool
    model: str | None = None
    deployment: str | None = None
    producer: str | None = None


KINDS: Mapping[str, Pruned] = {
    "decisions": Pruned(
        "decisions", "occurred_at", True, "model_name", "deployment_id", "producer_id"
    ),
    "model_events": Pruned("model_events", "occurred_at", True, producer="producer_id"),
    "outcomes": Pruned("outcomes", "occurred_at", True, producer="producer_id"),
    "reviews": Pruned("reviews", "occurred_at", True, producer="producer_id"),
    "quarantine": Pruned("quarantine", "received_at", False),
    "incidents": Pruned("incidents", "detected_at", False, producer="producer_id"),
    "access_log": Pruned("access_log", "accessed_at", False),
}
"""Every kind retention knows, by the name its window setting carries. A hold's filter on a
column the kind lacks (a model, for the access log) holds every row of the kind in the hold's
time range: a hold keeps too much rather than too little."""


class RetentionSettings(MigrateSettings):
    """Retention windows in days per record kind (unset: kept for good)."""

    retention_decisions_days: int | None = Field(
        None, ge=1, description="keep decisions this many days (at least 183: EU AI Act)"
    )
    retention_model_events_days: int | None = Field(
        None, ge=1, description="keep model-lifecycle events this many days"
    )
    retention_outcomes_days: int | None = Field(
        None, ge=1, description="keep outcomes this many days"
    )
    retention_reviews_days: int | None = Field(
        None, ge=1, description="keep human reviews this many days"
    )
    retention_quarantine_days: int | None = Field(
        None, ge=1, description="keep quarantined messages this many days"
    )
    retention_incidents_days: int | None = Field(
        None, ge=1, description="keep incidents this many days"
    )
    retention_access_log_days: int | None = Field(
        None, ge=1, description="keep the access log this many days"
    )

    def windows(self) -> dict[str, int]:
        """The kinds with a window, in :data:`KINDS` order."""
        out = {}
        for kind in KINDS:
            days = getattr(self, f"retention_{kind}_days")
            if days is not None:
                out[kind] = int(days)
        return out


class BelowRetentionFloor(DecisionAuditError, ValueError):
    """Decisions given a window under the EU AI Act's six months without saying so."""


class EmptyReason(DecisionAuditError, ValueError):
    """A hold, and its release, must say why."""


class UnknownHold(DecisionAuditError, LookupError):
    """No active hold has that id."""


def check_floor(windows: Mapping[str, int], below_floor: bool) -> None:
    days = windows.get("decisions")
    if days is not None and days < EU_AI_ACT_FLOOR_DAYS and not below_floor:
        raise BelowRetentionFloor(
            f"a decisions window of {days} days is under the EU AI Act's floor of "
            f"{EU_AI_ACT_FLOOR_DAYS} days (Art. 19, 26: logs kept at least six months); "
            "pass --below-eu-ai-act-floor if the system is outside its scope; nothing was pruned"
        )


# -- legal holds ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Hold:
    hold_id: str
    recorded_at: datetime
    actor: str
    reason: str
    model: str | None = None
    deployment: str | None = None
    producer: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def describe(self) -> str:
        named = (
            ("model", self.model),
            ("deployment", self.deployment),
            ("producer", self.producer),
        )
        parts = [f"{k}={v}" for k, v in named if v is not None]
        if self.since or self.until:
            since = self.since.isoformat() if self.since else "…"
            until = self.until.isoformat() if self.until else "…"
            parts.append(f"time={since}..{until}")
        return ", ".join(parts) or "everything"


_HOLD_COLUMNS = (
    "hold_id",
    "action",
    "recorded_at",
    "actor",
    "os_user",
    "host",
    "reason",
    "model",
    "deployment",
    "producer",
    "from_time",
    "until_time",
)


def _utc(ts: datetime) -> datetime:
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def add_hold(
    client: Any,
    database: str,
    *,
    actor: str,
    reason: str,
    model: str | None = None,
    deployment: str | None = None,
    producer: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> Hold:
    """Record a legal hold; retention removes none of the rows it matches."""
    if not reason.strip():
        raise EmptyReason("--reason must say why the records are held (e.g. the case number)")
    if not actor.strip():
        raise EmptyReason("--actor must name who places the hold")
    if since is not None and until is not None and until <= since:
        raise ValueError(f"--until {until.isoformat()} is not after --since {since.isoformat()}")
    hold = Hold(
        str(uuid7()),
        utc_now(),
        actor,
        reason.strip(),
        model,
        deployment,
        producer,
        since and _utc(since),
        until and _utc(until),
    )
    _insert_hold(client, database, hold, "add", hold.reason, actor)
    return hold


def _insert_hold(
    client: Any, database: str, hold: Hold, action: str, reason: str, actor: str
) -> None:
    row = [
        uuid.UUID(hold.hold_id),
        action,
        utc_now() if action == "release" else hold.recorded_at,
        actor,
        os_user(),
        socket.gethostname(),
        reason,
        hold.model,
        hold.deployment,
        hold.producer,
        hold.since,
        hold.until,
    ]
    client.insert(
        f"{database}.legal_holds",
        [row],
        column_names=list(_HOLD_COLUMNS),
        settings={"async_insert": 0},
    )


def active_holds(client: Any, database: str) -> list[Hold]:
    """The holds added and not released, oldest first."""
    rows = client.query(
        "SELECT toString(hold_id), recorded_at, actor, reason, model, deployment, producer, "
        f"from_time, until_time FROM {database}.legal_holds WHERE action = 'add' "
        f"AND hold_id NOT IN (SELECT hold_id FROM {database}.legal_holds "
        "WHERE action = 'release') ORDER BY recorded_at"
    ).result_rows
    return [Hold(str(r[0]), *r[1:]) for r in rows]


def release_hold(client: Any, database: str, hold_id: str, *, actor: str, reason: str) -> Hold:
    """Record the release of an active hold (the add row stays)."""
    if not reason.strip():
        raise EmptyReason("--reason must say why the hold is released (e.g. the case closed)")
    hold = next((h for h in active_holds(client, database) if h.hold_id == hold_id), None)
    if hold is None:
        raise UnknownHold(
            f"no active hold {hold_id!r}: see `decision-audit hold list`; nothing was released"
        )
    _insert_hold(client, database, hold, "release", reason.strip(), actor)
    return hold


def _at(ts: datetime) -> str:
    return f"toDateTime64({quote_str(_utc(ts).strftime('%Y-%m-%d %H:%M:%S.%f')[:-3])}, 3, 'UTC')"


def held_sql(holds: Iterable[Hold], kind: Pruned) -> str:
    """A condition true for the rows of ``kind`` some hold keeps (values written in: an
    ``ON CLUSTER`` mutation is queued as text)."""
    ors = []
    for h in holds:
        conds = []
        for value, column in (
            (h.model, kind.model),
            (h.deployment, kind.deployment),
            (h.producer, kind.producer),
        ):
            if value is not None and column is not None:
                conds.append(f"ifNull({column}, '') = {quote_str(value)}")
        if h.since is not None:
            conds.append(f"{kind.time} >= {_at(h.since)}")
        if h.until is not None:
            conds.append(f"{kind.time} < {_at(h.until)}")
        ors.append("(" + (" AND ".join(conds) or "1") + ")")
    return " OR ".join(ors) or "0"


# -- the boundaries verify starts from -------------------------------------------------------


@dataclass(frozen=True)
class ChainStart:
    """Where ``verify`` starts a pruned chain: the first seq kept, and the hash it links to."""

    seq: int
    prev_hash: bytes


def chain_starts(client: Any, database: str, table: str) -> dict[tuple[str, int], ChainStart]:
    """The latest retention boundary of every pruned chain of ``table``'s record kind."""
    rows = client.query(
        "SELECT producer_id, producer_epoch, max(boundary_seq), "
        f"argMax(boundary_hash, boundary_seq) AS head FROM {database}.retention_prunings "
        "WHERE kind = {k:String} AND boundary_seq > 0 GROUP BY producer_id, producer_epoch",
        parameters={"k": table},
        column_formats={"head": "bytes"},
    ).result_rows
    return {(str(p), int(e)): ChainStart(int(b) + 1, bytes(h)) for p, e, b, h in rows}


# -- pruning ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pruning:
    """A recorded pruning of one chain, with the run record that covers it (if any)."""

    pruning_id: str
    pruned_at: datetime
    horizon: datetime
    boundary_seq: int
    run: RunRecord | None


@dataclass(frozen=True)
class RunRecord:
    """What a retention run recorded for one kind before pruning it."""

    ran_at: datetime
    window_days: int
    below_floor: bool
    horizon: datetime


def prunings(
    client: Any, database: str, table: str, chains: Iterable[tuple[str, int]]
) -> dict[tuple[str, int], list[Pruning]]:
    """Every recorded pruning of ``chains`` of ``table``'s kind, each chain's by boundary, with
    the run record that covers it."""
    rows = client.query(
        "SELECT p.producer_id, p.producer_epoch, toString(p.pruning_id), p.pruned_at, "
        "p.horizon, p.boundary_seq, r.run_id != toUUID('00000000-0000-0000-0000-000000000000'), "
        "r.ran_at, r.window_days, r.below_floor, r.horizon "
        f"FROM {database}.retention_prunings AS p LEFT JOIN {database}.retention_runs AS r "
        "ON p.run_id = r.run_id AND p.kind = r.kind "
        "WHERE p.kind = {k:String} AND p.boundary_seq > 0 "
        "AND (p.producer_id, p.producer_epoch) IN {c:Array(Tuple(String, UInt64))} "
        "ORDER BY p.producer_id, p.producer_epoch, p.boundary_seq",
        parameters={"k": table, "c": sorted(chains)},
        settings={"join_use_nulls": 0},
    ).result_rows
    out: dict[tuple[str, int], list[Pruning]] = {}
    for pid, epoch, pruning_id, at, horizon, boundary, has_run, ran_at, days, below, rh in rows:
        run = RunRecord(_utc(ran_at), int(days), bool(below), _utc(rh)) if has_run else None
        out.setdefault((str(pid), int(epoch)), []).append(
            Pruning(str(pruning_id), _utc(at), _utc(horizon), int(boundary), run)
        )
    return out


@dataclass(frozen=True)
class _Run:
    run_id: uuid.UUID
    at: datetime
    days: int
    below_floor: bool
    actor: str


@dataclass
class KindResult:
    kind: str
    horizon: datetime
    rows: int = 0
    chains: int = 0
    skipped: list[str] | None = None
    """chains not pruned, and why"""


@dataclass(frozen=True)
class _Cut:
    producer_id: str
    epoch: int
    boundary: int
    head: bytes
    rows: int


def prune(
    client: Any,
    database: str,
    windows: Mapping[str, int],
    *,
    actor: str,
    below_floor: bool = False,
    cluster: str | None = None,
    dry_run: bool = False,
    now: datetime | None = None,
) -> list[KindResult]:
    """Prune every kind with a window up to ``now - window``, sparing held rows; record each
    pruning before deleting. ``dry_run``: say what would go, change nothing."""
    check_floor(windows, below_floor)
    unknown = set(windows) - set(KINDS)
    if unknown:
        raise ValueError(f"no record kind(s) {sorted(unknown)}; known: {', '.join(KINDS)}")
    if not actor.strip():
        raise EmptyReason("the actor running retention must be named")
    holds = active_holds(client, database)
    at = now or utc_now()
    run_id = uuid7()
    out = []
    for name, days in windows.items():
        kind = KINDS[name]
        run = _Run(run_id, at, days, below_floor, actor)
        horizon = at - timedelta(days=days)
        held = held_sql(holds, kind)
        if kind.chained:
            out.append(_prune_chains(client, database, kind, horizon, held, run, cluster, dry_run))
        else:
            out.append(_prune_rows(client, database, kind, horizon, held, run, cluster, dry_run))
    return out


def _record(
    client: Any,
    database: str,
    kind: Pruned,
    horizon: datetime,
    cuts: list[_Cut],
    run: _Run,
) -> None:
    """The run's record for ``kind`` (its window), then one row per pruning naming the run."""
    who, host = os_user(), socket.gethostname()
    client.insert(
        f"{database}.retention_runs",
        [
            [
                run.run_id,
                run.at,
                kind.table,
                run.days,
                run.below_floor,
                horizon,
                run.actor,
                who,
                host,
            ]
        ],
        column_names=[
            "run_id",
            "ran_at",
            "kind",
            "window_days",
            "below_floor",
            "horizon",
            "actor",
            "os_user",
            "host",
        ],
        settings={"async_insert": 0},
    )
    rows = [
        [
            uuid7(),
            run.run_id,
            run.at,
            kind.table,
            horizon,
            c.producer_id,
            c.epoch,
            c.boundary,
            c.head,
            c.rows,
            run.actor,
            who,
            host,
        ]
        for c in cuts
    ]
    client.insert(
        f"{database}.retention_prunings",
        rows,
        column_names=PRUNING_COLUMNS,
        settings={"async_insert": 0},
    )


def _delete(client: Any, database: str, table: str, where: str, cluster: str | None) -> None:
    sql = f"ALTER TABLE {database}.{table} DELETE WHERE {where}"
    for stmt in cluster_statements(sql, database, cluster):
        client.command(stmt, settings={"mutations_sync": 2})


def _prune_rows(
    client: Any,
    database: str,
    kind: Pruned,
    horizon: datetime,
    held: str,
    run: _Run,
    cluster: str | None,
    dry_run: bool,
) -> KindResult:
    where = f"{kind.time} < {_at(horizon)} AND NOT ({held})"
    n = int(
        client.query(f"SELECT count() FROM {database}.{kind.table} WHERE {where}").result_rows[0][0]
    )
    result = KindResult(kind.table, horizon, rows=n)
    if n and not dry_run:
        _record(client, database, kind, horizon, [_Cut("", 0, 0, ZERO_HASH, n)], run)
        _delete(client, database, kind.table, where, cluster)
    return result


def _prune_chains(
    client: Any,
    database: str,
    kind: Pruned,
    horizon: datetime,
    held: str,
    run: _Run,
    cluster: str | None,
    dry_run: bool,
) -> KindResult:
    db, table = database, kind.table
    keep = f"{kind.time} >= {_at(horizon)} OR ({held})"
    starts = chain_starts(client, db, table)
    rows = client.query(
        f"SELECT producer_id, producer_epoch, max(seq), countIf({keep}), minIf(seq, {keep}) "
        f"FROM {db}.{table} FINAL GROUP BY producer_id, producer_epoch "
        "ORDER BY producer_id, producer_epoch"
    ).result_rows
    result = KindResult(table, horizon, skipped=[])
    cuts: list[_Cut] = []
    for pid, epoch, last, kept, first_kept in rows:
        pid, epoch = str(pid), int(epoch)
        boundary = int(first_kept) - 1 if int(kept) else int(last)
        prior = starts[(pid, epoch)].seq - 1 if (pid, epoch) in starts else 0
        if boundary <= prior:
            continue
        present, head = client.query(
            "SELECT uniqExact(seq), anyIf(event_hash, seq = {b:UInt64}) AS head "
            f"FROM {db}.{table} FINAL "
            "WHERE producer_id = {p:String} AND producer_epoch = {e:UInt64} "
            "AND seq > {lo:UInt64} AND seq <= {b:UInt64}",
            parameters={"p": pid, "e": epoch, "lo": prior, "b": boundary},
            column_formats={"head": "bytes"},
        ).result_rows[0]
        if int(present) != boundary - prior:
            assert result.skipped is not None
            result.skipped.append(
                f"{pid}/{epoch}: {boundary - prior - int(present)} of seq {prior + 1}..{boundary} "
                "already missing; not pruned so that verify still reports the gap"
            )
            continue
        cuts.append(_Cut(pid, epoch, boundary, bytes(head), boundary - prior))
    result.chains = len(cuts)
    result.rows = sum(c.rows for c in cuts)
    if not cuts or dry_run:
        return result
    _record(client, db, kind, horizon, cuts, run)
    for i in range(0, len(cuts), DELETE_BATCH):
        chains = " OR ".join(
            f"(producer_id = {quote_str(c.producer_id)} AND producer_epoch = {c.epoch} "
            f"AND seq <= {c.boundary})"
            for c in cuts[i : i + DELETE_BATCH]
        )
        _delete(client, db, table, f"({chains}) AND NOT ({held})", cluster)
    return result
