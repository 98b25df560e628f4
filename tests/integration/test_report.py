"""The HTML report, rendered by a real headless Chromium as a reader would open it."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from decision_audit import AuditProducer
from decision_audit.audit.report import psi
from decision_audit.cli.main import main
from decision_audit.contract.models import utc_now
from decision_audit.devtools.tansu_broker import LocalBroker
from decision_audit.worker.settings import WorkerSettings
from tests.helpers import run_worker, send_raw

pytestmark = pytest.mark.integration

CHROMIUM_FIX = (
    "headless Chromium is needed to test the HTML report: run `make chromium` "
    "(apt-get install -y --no-install-recommends chromium)"
)


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.fail(f"chromium not found. {CHROMIUM_FIX}")
    return found


def dump_dom(html: Path) -> str:
    """The DOM after the page's scripts ran, as headless Chromium serializes it."""
    with tempfile.TemporaryDirectory() as profile:
        out = subprocess.run(
            [
                chromium(),
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                f"--user-data-dir={profile}",
                "--virtual-time-budget=5000",
                "--dump-dom",
                html.resolve().as_uri(),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def test_psi() -> None:
    same = {"a": 50.0, "b": 50.0}
    assert psi(same, same) == 0
    assert psi(same, {"a": 45.0, "b": 55.0}) < 0.1
    assert psi(same, {"a": 10.0, "b": 90.0}) > 0.2
    assert psi({"a": 10.0}, {"b": 10.0}) > 1  # disjoint: large, finite


def test_report_renders_in_chromium_with_charts_alerts_and_integrity(
    broker: LocalBroker, ch: Any, chdb_dir: Path, database: str, worker_settings: WorkerSettings,
    tmp_path: Path,
) -> None:  # fmt: skip
    now = utc_now()
    with AuditProducer(
        broker.bootstrap_servers,
        producer_id=f"report-{uuid.uuid4().hex[:6]}",
        topic=worker_settings.topic,
    ) as p:
        for i in range(160):
            previous = i < 80
            at = now - timedelta(minutes=(230 - i) if previous else (110 - (i - 80)))
            # credit-risk: mostly approve before, mostly decline now (a shift).
            label = (
                ("approve" if i % 10 < 8 else "decline")
                if previous
                else ("decline" if i % 10 < 8 else "approve")
            )
            score = (i % 10) / 20 + (0.0 if previous else 0.5)
            p.log_decision("credit-risk", "1", {"i": i}, label, score=score, latency_ms=2.0 + i % 7,
                           occurred_at=at)  # fmt: skip
            # fraud: the same distribution in both windows (no alert).
            p.log_decision("fraud", "3", {"i": i}, "ok" if i % 4 else "flag", score=(i % 20) / 20,
                           latency_ms=1.0, occurred_at=at)  # fmt: skip
    send_raw(broker.bootstrap_servers, worker_settings.topic, [(b"x", b"not avro", None)])
    stats = run_worker(worker_settings, ch)
    assert stats.inserted == 320 and stats.quarantined_total == 1

    out = tmp_path / "report.html"
    since = (now - timedelta(hours=2)).isoformat()
    result = CliRunner().invoke(
        main,
        [
            "report", "--clickhouse-url", f"chdb://{chdb_dir}", "--database", database,
            "--html", str(out), "--since", since, "--actor", "auditor-ann",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "2 shift alert(s)" in result.output and "integrity ok" in result.output
    html = out.read_text()
    # Self-contained: nothing to fetch.
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html, re.I)
    assert "<link" not in html and "@import" not in html

    dom = dump_dom(out)
    charts = re.findall(r"<svg[^>]*class=\"chart\"[^>]*>", dom)
    # Volume + (mix, score, latency) per model + incidents + quarantine.
    assert len(charts) == 1 + 3 * 2 + 2, charts
    widths = [int(w) for w in re.findall(r'data-rendered-width="(\d+)"', dom)]
    assert len(widths) == len(charts) and all(w > 0 for w in widths), widths
    drawn = int(re.search(r'data-charts-drawn="(\d+)"', dom)[1])  # type: ignore[index]
    # Every chart has marks except "incidents" (none in this window: an explicit placeholder).
    assert drawn == len(charts) - 1, dom[:2000]
    assert "none in this window" in dom
    alerts = re.findall(r'class="(alert|moderate) shift-alert" data-model="([^"]+)"', dom)
    assert ("alert", "credit-risk") in alerts and all(m != "fraud" for _, m in alerts), alerts
    assert "prediction mix moved" in dom and "score distribution moved" in dom
    assert "VERIFIED" in dom and "hash_mismatch" not in dom and "bad_magic" in dom

    rows = ch.query(f"SELECT actor, command FROM {database}.access_log").result_rows
    assert ("auditor-ann", "report") in rows
