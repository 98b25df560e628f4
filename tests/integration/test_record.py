"""The whole record end to end on the real broker and chDB: failed inferences, outcomes and
human reviews — stored once, linked to their decisions, verified, traced, tampering named."""

from __future__ import annotations

import json
import re
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from decision_audit import AuditProducer, RedactionPolicy
from decision_audit.audit.verify import TrailVerifier
from decision_audit.cli.main import main
from decision_audit.contract.keys import KeyRing
from decision_audit.contract.models import utc_now
from decision_audit.devtools.tansu_broker import LocalBroker
from decision_audit.producer.redaction import HASH_PREFIX, TextRule, ValueRule
from decision_audit.producer.signing import generate_keypair
from decision_audit.worker.settings import WorkerSettings
from decision_audit.worker.topics import ensure_topics
from tests.helpers import count, run_worker
from tests.integration.test_report import dump_dom

pytestmark = pytest.mark.integration


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    generate_keypair(tmp_path / "keys", "serving")
    return tmp_path / "keys"


@pytest.fixture
def record_settings(broker: LocalBroker, worker_settings: WorkerSettings, keys: Path) -> Any:
    t = worker_settings.topic
    topics = {
        "model_events_topic": f"{t}-me",
        "outcomes_topic": f"{t}-o",
        "reviews_topic": f"{t}-r",
    }
    ensure_topics(broker.bootstrap_servers, dict.fromkeys(topics.values(), 2))
    return worker_settings.model_copy(update={**topics, "keys": keys})


def _producer(broker: LocalBroker, s: WorkerSettings, keys: Path, **kw: Any) -> AuditProducer:
    return AuditProducer(
        broker.bootstrap_servers,
        producer_id=f"serving-{uuid.uuid4().hex[:6]}",
        topic=s.topic,
        model_events_topic=s.model_events_topic,
        outcomes_topic=s.outcomes_topic,
        reviews_topic=s.reviews_topic,
        signing_key=keys / "serving.key",
        **kw,
    )


def _cli(chdb_dir: Path, db: str, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(
        main, [args[0], "--clickhouse-url", f"chdb://{chdb_dir}", "--database", db, *args[1:]]
    )
    return result.exit_code, result.output


class Logged:
    """What the scenario logged: ids by name."""

    def __init__(self) -> None:
        self.ids: dict[str, str] = {}

    def log(self, p: AuditProducer) -> None:
        ids = self.ids
        for i in range(6):
            ids[f"ok-{i}"] = p.log_decision(
                "credit", "2", {"i": i}, "approve" if i % 2 else "decline", score=i / 6,
                request_id=f"req-{i}",
            )  # fmt: skip
        ids["timeout"] = p.log_decision(
            "credit", "2", {"i": 6}, status="timeout", error=TimeoutError("no answer in 250 ms"),
            request_id="req-timeout",
        )  # fmt: skip
        ids["fallback"] = p.log_decision(
            "credit", "2", {"i": 7}, "decline", status="fallback", error_type="ModelDown"
        )
        # Outcomes by event id and by request id; one names no decision at all.
        ids["o-0"] = p.log_outcome(ids["ok-0"], "decline", source="bureau", actor="etl")
        ids["o-1"] = p.log_outcome("req-1", "decline", source="bureau")
        ids["o-2"] = p.log_outcome("req-2", 1.5)  # numeric against a label: judged apart
        ids["o-unknown"] = p.log_outcome("req-never-decided", "approve")
        # Reviews: an override with its reason, a confirmation, an escalation, an orphan.
        ids["r-override"] = p.log_review(
            ids["ok-1"], "j.doe", "override", final_decision="decline", reason="income unverified"
        )
        ids["r-confirm"] = p.log_review("req-0", "a.lee", "confirm")
        ids["r-escalate"] = p.log_review(ids["timeout"], "a.lee", "escalate", reason="failed")
        ids["r-unknown"] = p.log_review("req-nobody", "a.lee", "confirm")


def test_failed_inferences_outcomes_and_reviews_end_to_end(
    broker: LocalBroker, ch: Any, chdb_dir: Path, record_settings: WorkerSettings, keys: Path
) -> None:
    s, db = record_settings, record_settings.database
    logged = Logged()
    with _producer(broker, s, keys) as p:
        logged.log(p)
    ids = logged.ids
    stats = run_worker(s, ch)
    assert stats.quarantined_total == 0, stats.quarantined
    assert stats.inserted == 8

    # Stored once, each kind in its table, on its own chain.
    assert count(ch, f"SELECT count() FROM {db}.outcomes FINAL") == 4
    assert count(ch, f"SELECT count() FROM {db}.reviews FINAL") == 4
    chains = dict(
        ch.query(
            f"SELECT 'outcomes', any(producer_id) FROM {db}.outcomes UNION ALL "
            f"SELECT 'reviews', any(producer_id) FROM {db}.reviews"
        ).result_rows
    )
    assert chains == {
        "outcomes": f"{p.producer_id}/outcomes",
        "reviews": f"{p.producer_id}/reviews",
    }
    # Every review is followed by its signed checkpoint; the outcomes' head is signed on close.
    assert count(ch, f"SELECT countIf(signature_verified) FROM {db}.review_checkpoints") == 4
    assert count(ch, f"SELECT max(seq) FROM {db}.outcome_checkpoints WHERE signature_verified") == 4

    failed = ch.query(
        f"SELECT status, error_type, error_message, prediction FROM {db}.decisions "
        "WHERE status != 'ok' ORDER BY status"
    ).result_rows
    assert failed == [
        ("fallback", "ModelDown", None, "decline"),
        ("timeout", "TimeoutError", "no answer in 250 ms", None),
    ]

    # Only what names no stored decision is flagged, stored all the same: the decisions of
    # the same batch were found.
    incidents = ch.query(
        f"SELECT kind, producer_id, detail FROM {db}.incidents FINAL ORDER BY producer_id"
    ).result_rows
    assert [(k, pid.rsplit("/", 1)[1]) for k, pid, _ in incidents] == [
        ("unknown_decision", "outcomes"),
        ("unknown_decision", "reviews"),
    ]
    assert "req-never-decided" in incidents[0][2] and "req-nobody" in incidents[1][2]

    # The views join them to their decisions, by event id or request id.
    joined = ch.query(
        f"SELECT toString(decision_event_id), actual FROM {db}.decision_outcomes ORDER BY actual"
    ).result_rows
    assert sorted(joined) == sorted(
        [(ids["ok-0"], "decline"), (ids["ok-1"], "decline"), (ids["ok-2"], "1.5")]
    )
    verdicts = ch.query(
        f"SELECT verdict, final_decision FROM {db}.decision_reviews ORDER BY verdict"
    ).result_rows
    assert verdicts == [("confirm", None), ("escalate", None), ("override", "decline")]

    # verify covers every chain of every kind.
    code, out = _cli(chdb_dir, db, "verify", "--keys", str(keys), "--format", "json")
    doc = json.loads(out)
    assert code == 0 and doc["ok"], out
    assert doc["events"] == 8 + 4 + 4
    suffixes = sorted(c["producer_id"].removeprefix(p.producer_id) for c in doc["chains"])
    assert suffixes == ["", "/outcomes", "/reviews"]
    assert all(c["attested_to"] == c["last_seq"] for c in doc["chains"])

    # trace shows the review and the outcome under the decision.
    code, text = _cli(chdb_dir, db, "trace", "--keys", str(keys), "req-1")
    assert code == 0, text
    flat = " ".join(text.split())
    assert "overridden to 'decline' by j.doe at " in flat and ": income unverified" in flat
    assert "outcome 'decline' observed at" in flat and "(source bureau)" in flat
    assert "the prediction 'approve' was wrong" in flat
    code, out = _cli(chdb_dir, db, "trace", "--keys", str(keys), "--format", "json", ids["ok-0"])
    t = json.loads(out)
    assert code == 0 and t["integrity"]["ok"]
    assert [r["record"]["verdict"] for r in t["reviews"]] == ["confirm"]
    assert [o["record"]["actual"] for o in t["outcomes"]] == ["decline"]
    assert all(f["ok"] and f["checkpoint_seq"] for f in t["reviews"] + t["outcomes"])
    assert "the prediction 'decline' was right" in t["outcomes"][0]["summary"]
    code, text = _cli(chdb_dir, db, "trace", "req-timeout")
    flat = " ".join(text.split())
    assert code == 0 and "timeout (TimeoutError: no answer in 250 ms)" in flat
    assert "escalated by a.lee at " in flat and ": failed" in flat

    # Redelivered in full (a new consumer group): nothing is stored twice.
    again = run_worker(s, ch, group=f"g-{uuid.uuid4().hex[:8]}")
    assert again.inserted == 0 and again.quarantined_total == 0 and again.duplicates >= 16
    assert count(ch, f"SELECT count() FROM {db}.outcomes") == 4
    assert count(ch, f"SELECT count() FROM {db}.reviews") == 4


def test_tampering_with_outcomes_and_reviews_is_named_by_verify_and_trace(
    broker: LocalBroker, ch: Any, chdb_dir: Path, record_settings: WorkerSettings, keys: Path
) -> None:
    s, db = record_settings, record_settings.database
    logged = Logged()
    with _producer(broker, s, keys) as p:
        logged.log(p)
    run_worker(s, ch)
    sync = {"mutations_sync": 2}
    ch.command(
        f"ALTER TABLE {db}.outcomes UPDATE actual = 'approve' WHERE decision_id = 'req-1'",
        settings=sync,
    )
    ch.command(f"ALTER TABLE {db}.reviews DELETE WHERE verdict = 'escalate'", settings=sync)

    report = TrailVerifier(ch, db, KeyRing.load(keys)).run()
    found = {
        (c.producer_id.removeprefix(p.producer_id), pr.kind, pr.seq)
        for c in report.chains
        for pr in c.problems
    }
    assert found == {("/outcomes", "altered_row", 2), ("/reviews", "deleted_rows", 3)}, found
    altered = next(pr for c in report.chains for pr in c.problems if pr.kind == "altered_row")
    assert "actual" in altered.detail and altered.event_ids == [logged.ids["o-1"]]
    code, out = _cli(chdb_dir, db, "verify", "--keys", str(keys), "--format", "json")
    assert code == 1 and json.loads(out)["problems"] == 2

    # The decision's trace fails on its altered outcome (exit 1), and says which.
    code, out = _cli(chdb_dir, db, "trace", "--keys", str(keys), "--format", "json", "req-1")
    t = json.loads(out)
    assert code == 1 and not t["integrity"]["ok"] and t["integrity"]["columns_ok"]
    assert t["integrity"]["problems"] == [
        f"outcome {logged.ids['o-1']}: its columns differ from its stored bytes"
    ]


def test_outcomes_and_reviews_are_stored_as_redacted_and_stamped_with_the_policy(
    broker: LocalBroker, ch: Any, record_settings: WorkerSettings, keys: Path
) -> None:
    s, db = record_settings, record_settings.database
    policy = RedactionPolicy(
        id="followups",
        version=3,
        review_reason=TextRule(action="mask", replacement="[note]"),
        final_decision=ValueRule(action="hash"),
        outcome_actual=ValueRule(action="hash"),
    )
    with _producer(broker, s, keys, redaction=policy, redaction_secret=b"s3cr3t") as p:
        eid = p.log_decision("credit", "2", {"i": 1}, "approve", request_id="req-1")
        p.log_outcome(eid, {"repaid": 120.5, "name": "Jane Roe"})
        p.log_review(
            "req-1", "j.doe", "override", final_decision="limit 500 for Jane Roe",
            reason="Jane Roe called, income verified",
        )  # fmt: skip
    stats = run_worker(s, ch)
    assert stats.inserted == 1 and stats.quarantined_total == 0
    ((actual, is_json, stamped),) = ch.query(
        f"SELECT actual, actual_is_json, redaction_policy FROM {db}.outcomes"
    ).result_rows
    assert actual.startswith(HASH_PREFIX) and not is_json and stamped == "followups@3"
    ((final, reason, stamped),) = ch.query(
        f"SELECT final_decision, reason, redaction_policy FROM {db}.reviews"
    ).result_rows
    assert final.startswith(HASH_PREFIX) and reason == "[note]" and stamped == "followups@3"
    everything = " ".join(
        str(v)
        for table in ("outcomes", "reviews")
        for row in ch.query(f"SELECT * FROM {db}.{table}").result_rows
        for v in row
    )
    assert "Jane" not in everything  # nor in the stored bytes (raw)
    # Stored as sent: the columns equal the records' bytes, the policy id among them.
    report = TrailVerifier(ch, db, KeyRing.load(keys)).run()
    assert not [pr for c in report.chains for pr in c.problems]


def test_report_shows_error_rates_outcomes_calibration_and_overrides(
    broker: LocalBroker,
    ch: Any,
    chdb_dir: Path,
    record_settings: WorkerSettings,
    keys: Path,
    tmp_path: Path,
) -> None:
    s, db = record_settings, record_settings.database
    now = utc_now()
    reviewed = {v: {"confirm": 0, "override": 0} for v in ("1", "2")}
    with _producer(broker, s, keys) as p:
        for i in range(200):
            previous = i < 100
            at = now - timedelta(minutes=(230 - i) if previous else (110 - (i - 100)))
            fails = (i % 50 == 0) if previous else (i % 10 < 3)  # 2 % before, 30 % now
            version = "1" if i % 2 else "2"
            if fails:
                p.log_decision("credit", version, {"i": i}, status="error", error_type="Boom",
                               occurred_at=at)  # fmt: skip
                continue
            score = (i % 10) / 10
            label = "approve" if score >= 0.5 else "decline"
            eid = p.log_decision("credit", version, {"i": i}, label, score=score, occurred_at=at)
            if not previous:
                # Version 1: a binary outcome (calibrated against the outcome rate); version
                # 2: the label that came true (against accuracy), here always the prediction.
                p.log_outcome(eid, score >= 0.3 if version == "1" else label)
                if i % 3 < 2:
                    verdict = "override" if i % 3 == 0 else "confirm"
                    final = "decline" if verdict == "override" else None
                    p.log_review(eid, "j.doe", verdict, final_decision=final)
                    reviewed[version][verdict] += 1
        # A regression model: numeric predictions, numeric outcomes (off by 10, 10, 30, 0).
        amounts = [(100.0, 110), (200.0, 190), (300.0, 330), (400.0, 400.0)]
        for k, (predicted, actual) in enumerate(amounts):
            at = now - timedelta(minutes=50 - k)
            p.log_outcome(
                p.log_decision("amount", "r1", {"k": k}, predicted, occurred_at=at), actual
            )
    stats = run_worker(s, ch)
    assert stats.inserted == 204 and stats.quarantined_total == 0

    out = tmp_path / "report.html"
    since = (now - timedelta(hours=2)).isoformat()
    code, text = _cli(chdb_dir, db, "report", "--html", str(out), "--since", since)
    assert code == 0, text
    dom = dump_dom(out)
    alerts = re.findall(r'class="(alert|moderate) shift-alert" data-model="credit" '
                        r'data-measure="([^"]+)"', dom)  # fmt: skip
    assert ("alert", "error rate") in alerts, alerts
    assert "2.0% → 30.0% of decisions failed" in dom
    titles = re.findall(r'<svg[^>]*class="chart"[^>]*aria-label="([^"]+)"', dom)
    assert "credit: error rate per hour (share of decisions that failed)" in titles
    calibration = [t for t in titles if "calibration by score decile" in t]
    assert calibration == [
        "credit@1: calibration by score decile (mean score vs outcome rate)",
        "credit@2: calibration by score decile (mean score vs accuracy)",
    ]
    drawn = re.findall(r'aria-label="credit@\d: calibration[^"]*"[^>]*data-marks="(\d+)"', dom)
    assert len(drawn) == 2 and all(int(n) > 0 for n in drawn), drawn

    def table(name: str) -> list[list[str]]:
        m = re.search(rf"<table class=\"{name}\">(.*?)</table>", dom, re.S)
        assert m is not None, name
        return [re.findall(r"<td>(.*?)</td>", row) for row in re.findall(r"<tr>(.*?)</tr>", m[1])][
            1:
        ]

    # Odd i are version 1: it failed 10 times now (i % 10 == 1), never before; version 2
    # 20 times now and twice before (i = 0, 50).
    errors = {r[1]: r[2:] for r in table("errors") if r[0] == "credit"}
    assert errors == {
        "1": ["50", "error 10", "20.0%", "0.0%"],
        "2": ["50", "error 20", "40.0%", "4.0%"],
    }
    # Every decision of the window that did not fail has an outcome.
    outcomes = {r[1]: r for r in table("outcomes") if r[0] == "credit"}
    assert outcomes["1"][3] == "40 (80.0%)" and outcomes["2"][3] == "30 (60.0%)"
    # Compared as recorded: version 1's labels never equal its JSON booleans.
    assert outcomes["2"][4] == "100.0% of 30" and outcomes["1"][4] == "0.0% of 40"
    # Numbers are not judged right or wrong but by how far off they were: (10+10+30+0)/4.
    assert [r for r in table("outcomes") if r[0] == "amount"] == [
        ["amount", "r1", "4", "4 (100.0%)", "-", "12.5 over 4"]
    ]
    assert outcomes["1"][5] == outcomes["2"][5] == "-"
    reviews = {r[1]: r[3:] for r in table("reviews") if r[0] == "credit"}
    assert reviews == {
        v: [
            str(n["confirm"] + n["override"]),
            str(n["confirm"]),
            str(n["override"]),
            "0",
            f"{n['override'] / (n['confirm'] + n['override']):.1%}",
        ]
        for v, n in reviewed.items()
    }
    assert all(n["override"] and n["confirm"] for n in reviewed.values())
