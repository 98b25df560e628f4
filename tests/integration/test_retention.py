"""Retention on the embedded stack: decisions logged with old ``occurred_at`` through a real
broker and the worker into chDB, pruned by ``decision-audit retention`` (chDB runs the DELETE
mutation for real), with legal holds, and ``verify`` walking each chain from its boundary."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from click.testing import CliRunner, Result

from decision_audit import AuditProducer
from decision_audit.audit.verify import TrailVerifier
from decision_audit.cli.main import main
from decision_audit.contract.keys import KeyRing
from decision_audit.contract.reasons import ProblemKind
from decision_audit.worker.settings import WorkerSettings
from tests.helpers import Broker, count, run_worker

pytestmark = pytest.mark.integration

OLD, NEW = 4, 3
"""per chain: decisions 400 days old (seq 1..OLD), then recent ones"""


def _log(broker: Broker, topic: str, producer_id: str, model: str) -> None:
    old = datetime.now(UTC) - timedelta(days=400)
    with AuditProducer(broker.bootstrap_servers, producer_id=producer_id, topic=topic) as p:
        for i in range(OLD):
            p.log_decision(model, "1", {"i": i}, "ok", occurred_at=old + timedelta(minutes=i))
        for i in range(NEW):
            p.log_decision(model, "1", {"i": OLD + i}, "ok")
        assert p.flush(10) == 0


@pytest.fixture
def trail(broker: Broker, ch: Any, worker_settings: WorkerSettings) -> WorkerSettings:
    """Chains ``credit`` (model credit) and ``fraud`` (model fraud), each OLD old decisions
    then NEW recent ones, stored by the worker."""
    for pid in ("credit", "fraud"):
        _log(broker, worker_settings.topic, pid, pid)
    stats = run_worker(worker_settings, ch)
    assert stats.inserted == 2 * (OLD + NEW)
    return worker_settings


def cli(s: WorkerSettings, *args: str) -> Result:
    store = ["--clickhouse-url", s.clickhouse_url, "--database", s.database]
    path = args[:2] if args[0] == "hold" else args[:1]
    return CliRunner().invoke(main, [*path, *store, *args[len(path) :]])


def seqs(ch: Any, db: str, pid: str) -> list[int]:
    rows = ch.query(
        f"SELECT seq FROM {db}.decisions FINAL WHERE producer_id = {{p:String}} ORDER BY seq",
        parameters={"p": pid},
    ).result_rows
    return [int(r[0]) for r in rows]


def problems(ch: Any, db: str) -> list[tuple[str, ProblemKind, int | None]]:
    """What verify finds, the same in the engine and event by event in Python."""
    found = []
    for engine in (True, False):
        report = TrailVerifier(ch, db, KeyRing(), engine=engine).run(record=engine)
        found.append([(c.producer_id, p.kind, p.seq) for c in report.chains for p in c.problems])
    assert found[0] == found[1], found
    return found[0]


def test_pruned_chain_verifies_green_and_a_held_range_survives(
    ch: Any, trail: WorkerSettings
) -> None:
    db = trail.database
    held = cli(trail, "hold", "add", "--model", "fraud", "--reason", "case 42", "--actor", "lee")
    assert held.exit_code == 0, held.output
    hold_id = held.output.split()[1]
    listed = cli(trail, "hold", "list")
    assert (
        hold_id in listed.output and "model=fraud" in listed.output and "case 42" in listed.output
    )

    pruned = cli(trail, "retention", "--retention-decisions-days", "200", "--actor", "ops")
    assert pruned.exit_code == 0, pruned.output
    assert f"decisions: pruned {OLD} row(s) in 1 chain(s)" in pruned.output
    assert seqs(ch, db, "credit") == list(range(OLD + 1, OLD + NEW + 1))
    assert seqs(ch, db, "fraud") == list(range(1, OLD + NEW + 1)), "the held chain is whole"
    (record,) = ch.query(
        f"SELECT kind, producer_id, boundary_seq, hex(boundary_hash), rows, actor "
        f"FROM {db}.retention_prunings"
    ).result_rows
    (linked,) = ch.query(
        f"SELECT hex(prev_hash) FROM {db}.decisions WHERE producer_id = 'credit' "
        f"AND seq = {OLD + 1}"
    ).result_rows[0]
    assert record == ("decisions", "credit", OLD, linked, OLD, "ops")
    assert problems(ch, db) == [], "a chain pruned by retention verifies green"

    again = cli(trail, "retention", "--retention-decisions-days", "200")
    assert "decisions: pruned 0 row(s)" in again.output
    assert count(ch, f"SELECT count() FROM {db}.retention_prunings") == 1

    released = cli(trail, "hold", "release", hold_id, "--reason", "case closed")
    assert released.exit_code == 0, released.output
    assert "no active holds" in cli(trail, "hold", "list").output
    assert count(ch, f"SELECT count() FROM {db}.legal_holds") == 2, "add and release rows"
    cli(trail, "retention", "--retention-decisions-days", "200")
    assert seqs(ch, db, "fraud") == list(range(OLD + 1, OLD + NEW + 1))
    assert problems(ch, db) == []


def test_removals_beside_retention_are_still_reported(ch: Any, trail: WorkerSettings) -> None:
    db = trail.database
    assert cli(trail, "retention", "--retention-decisions-days", "365").exit_code == 0
    assert problems(ch, db) == []
    # Above the horizon: a kept row of a pruned chain, by hand.
    ch.command(
        f"ALTER TABLE {db}.decisions DELETE WHERE producer_id = 'credit' AND seq = {OLD + 2}",
        settings={"mutations_sync": 2},
    )
    # The first kept row: the chain no longer starts right after its boundary.
    ch.command(
        f"ALTER TABLE {db}.decisions DELETE WHERE producer_id = 'fraud' AND seq = {OLD + 1}",
        settings={"mutations_sync": 2},
    )
    found = problems(ch, db)
    assert ("credit", ProblemKind.DELETED_ROWS, OLD + 2) in found
    assert ("fraud", ProblemKind.DELETED_ROWS, OLD + 1) in found
    assert len(found) == 2, found


def test_removal_without_a_retention_record_is_reported_and_not_laundered(
    ch: Any, trail: WorkerSettings
) -> None:
    db = trail.database
    ch.command(
        f"ALTER TABLE {db}.decisions DELETE WHERE producer_id = 'credit' AND seq = 2",
        settings={"mutations_sync": 2},
    )
    assert ("credit", ProblemKind.DELETED_ROWS, 2) in problems(ch, db)
    # Retention does not prune over the gap (that would hide it): the chain is skipped.
    out = cli(trail, "retention", "--retention-decisions-days", "200")
    assert out.exit_code == 0, out.output
    assert "skipped credit/" in out.output and "already missing" in out.output
    assert seqs(ch, db, "credit") == [1, *range(3, OLD + NEW + 1)]
    assert seqs(ch, db, "fraud") == list(range(OLD + 1, OLD + NEW + 1))
    found = problems(ch, db)
    assert found == [("credit", ProblemKind.DELETED_ROWS, 2)], found


def test_decisions_below_the_eu_ai_act_floor_need_the_flag(ch: Any, trail: WorkerSettings) -> None:
    db = trail.database
    refused = cli(trail, "retention", "--retention-decisions-days", "90")
    assert refused.exit_code == 2, refused.output
    assert "183 days" in refused.output and "--below-eu-ai-act-floor" in refused.output
    assert count(ch, f"SELECT count() FROM {db}.decisions FINAL") == 2 * (OLD + NEW)
    ok = cli(trail, "retention", "--retention-decisions-days", "90", "--below-eu-ai-act-floor")
    assert ok.exit_code == 0, ok.output
    assert count(ch, f"SELECT count() FROM {db}.decisions FINAL") == 2 * NEW
    assert problems(ch, db) == []


def test_hold_with_an_empty_reason_is_refused_and_changes_nothing(
    ch: Any, trail: WorkerSettings
) -> None:
    db = trail.database
    for reason in ("", "   "):
        out = cli(trail, "hold", "add", "--model", "credit", "--reason", reason)
        assert out.exit_code == 2, out.output
        assert "--reason must say why the records are held" in out.output
    assert count(ch, f"SELECT count() FROM {db}.legal_holds") == 0
    unknown = cli(trail, "hold", "release", "0190a0b0-0000-7000-8000-000000000000", "--reason", "x")
    assert unknown.exit_code == 1 and "no active hold" in unknown.output
    assert count(ch, f"SELECT count() FROM {db}.legal_holds") == 0


def test_access_log_and_time_range_holds(ch: Any, database: str, chdb_dir: Any) -> None:
    """A kind without chains is pruned by time; a hold by time range alone keeps its rows."""
    db = database
    now = datetime.now(UTC)
    rows = [[now - timedelta(days=d), "alice", "query", "x", "ok"] for d in (10, 100, 400, 500)]
    ch.insert(
        f"{db}.access_log",
        rows,
        column_names=["accessed_at", "actor", "command", "target", "status"],
        settings={"async_insert": 0},
    )
    s = WorkerSettings(clickhouse_url=f"chdb://{chdb_dir}", database=db, topic="unused")
    since = (now - timedelta(days=450)).isoformat()
    until = (now - timedelta(days=350)).isoformat()
    held = cli(s, "hold", "add", "--since", since, "--until", until, "--reason", "audit 7")
    assert held.exit_code == 0, held.output
    out = cli(s, "retention", "--retention-access-log-days", "30")
    assert out.exit_code == 0, out.output
    assert "access_log: pruned 2 row(s)" in out.output
    kept = ch.query(
        f"SELECT dateDiff('day', accessed_at, now64(3)) FROM {db}.access_log"
    ).result_rows
    assert sorted(int(r[0]) for r in kept) == [10, 400]
