"""Smoke test of ``python -m bench --quick``: it runs end to end and reports every figure.

Timings are not asserted (this machine is noisy); only that each figure is a positive number.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent

EXPECTED = {
    "producer.log_decision_p50_us",
    "producer.log_decision_p99_us",
    "producer.p50_ratio_to_bare",
    "worker.events_per_s",
    "worker.speedup_vs_naive",
    "worker.cpu_s_per_million",
    "latency.e2e_p50_ms",
    "latency.e2e_p99_ms",
    "footprint.worker_peak_rss_mib",
    "footprint.disk_bytes_per_event",
    "footprint.producer_backlog_growth_mib",
    "integrity.log_decision_p50_signed_us",
    "integrity.worker_check_ev_s",
    "integrity.verify_ev_s",
}


def positive(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) and v > 0


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_bench_quick_reports_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-4000:] + proc.stdout[-2000:]
    doc = json.loads(out.read_text())

    figures = doc["figures"]
    assert set(figures) >= EXPECTED, f"missing figures: {EXPECTED - set(figures)}"
    assert {k: v for k, v in figures.items() if not positive(v)} == {}
    for row in doc["table"]:
        for name in ("value", "baseline", "ratio"):
            if row[name] is not None:
                assert positive(row[name]), (row["key"], name, row[name])
        if row["target"] is not None:
            assert row["status"] in ("PASS", "MISS")
    assert doc["mode"] == "quick"
    assert "ours" in proc.stdout and "baseline" in proc.stdout


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_bench_runs_the_worker_and_latency_figures_on_both_brokers(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [
            *(sys.executable, "-m", "bench", "--quick", "--json", str(out)),
            *("--only", "worker", "--only", "latency", "--brokers", "tansu,kafka"),
            *("--worker-events", "5000", "--latency-seconds", "3"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=360,
    )
    assert proc.returncode == 0, proc.stderr[-4000:] + proc.stdout[-2000:]
    figures = json.loads(out.read_text())["figures"]
    for key in ("worker.events_per_s", "worker.speedup_vs_naive", "latency.e2e_p99_ms"):
        assert positive(figures[key]), key
        assert positive(figures[f"{key}@kafka"]), f"{key}@kafka"
    assert "[Apache Kafka]" in proc.stdout


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_lookup_bench_quick_reports_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "lookups.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.lookup_bench", "--quick", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=360,
    )
    assert proc.returncode == 0, proc.stderr[-4000:] + proc.stdout[-2000:]
    doc = json.loads(out.read_text())
    figures = doc["figures"]
    for key in (
        "lookup.by_request_id_p50_ms",
        "lookup.by_event_id_p99_ms",
        "lookup.deployment_hour_p50_ms",
        "lookup.model_day_rollup_p50_ms",
        "lookup.model_day_base_p50_ms",
        "lookup.input_field_day_p50_ms",
        "layout.by_request_id_0018_p50_ms",
        "layout.by_event_id_0018_p50_ms",
        "trace.e2e_ms",
        "footprint.bytes_per_event",
        "verify.peak_rss_mib_at_lookup_store",
    ):
        assert positive(figures[key]), key
    # trace beyond start-up is a difference of two noisy timings: only that it is a number
    assert math.isfinite(figures["trace.beyond_startup_ms"])
    assert "ours" in proc.stdout and "baseline" in proc.stdout
