"""``decision-audit report``: one self-contained HTML file about a window of the trail.

Charts (inline SVG, :mod:`.charts`) of volume per model, prediction mix, score
and latency quantiles per hour (read from the rollups), incidents and quarantine by reason;
a shift alert per model when its prediction mix or score distribution moved against the
previous window of the same length; per model version the failed inferences (error rate,
charted per hour when there are any, an alert when it rose), the outcomes (share, accuracy
or error, calibration by score decile) and the human reviews (override rate), from
:mod:`.version_stats`; and the integrity summary of the window from
:class:`decision_audit.audit.verify.TrailVerifier`. The file needs no network to open.

Shift is measured with the population stability index,
``PSI = Σ (cur_i - prev_i) · ln(cur_i / prev_i)`` over shares of prediction labels, or of
score bins (deciles of the previous window). A PSI of :data:`PSI_ALERT` (0.2) or more raises
an alert; 0.1-0.2 is reported as a moderate shift. A model's error rate (the share of its
decisions whose status is not ``ok``) that rose by :data:`.version_stats.Z_ALERT` standard
errors or more (two-proportion z-test) is an alert, by :data:`.version_stats.Z_MODERATE` a
moderate shift: PSI hardly moves for a rare category (1 % → 5 % errors is PSI 0.07).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from html import escape
from typing import Any

from decision_audit.audit import charts
from decision_audit.audit.verify import TrailVerifier
from decision_audit.audit.verify_report import TrailReport
from decision_audit.audit.version_stats import (
    Z_ALERT,
    Z_MODERATE,
    VersionErrors,
    VersionOutcomes,
    VersionReviews,
    error_rate_z,
    unlinked,
    version_errors,
    version_outcomes,
    version_reviews,
)
from decision_audit.contract.keys import KeyRing

PSI_ALERT = 0.2
PSI_MODERATE = 0.1
PSI_EPSILON = 1e-4
"""share used for a category that is empty in one window (PSI is undefined at 0)"""
MIN_EVENTS = 30
"""fewer decisions than this in either window: no shift test"""
MAX_MODELS = 8


def psi(previous: Mapping[str, float], current: Mapping[str, float]) -> float:
    """Population stability index between two count (or share) distributions."""
    keys = set(previous) | set(current)
    p_total = sum(previous.values()) or 1.0
    c_total = sum(current.values()) or 1.0
    out = 0.0
    for k in keys:
        p = max(previous.get(k, 0.0) / p_total, PSI_EPSILON)
        c = max(current.get(k, 0.0) / c_total, PSI_EPSILON)
        out += (c - p) * math.log(c / p)
    return out


@dataclass
class ShiftAlert:
    model: str
    measure: str
    """``prediction mix``, ``score distribution`` or ``error rate``"""
    value: float
    level: str
    """``alert`` (≥ PSI_ALERT, or z ≥ Z_ALERT) or ``moderate``"""
    statistic: str = "PSI"
    """``PSI``, or ``z`` (the error rate's rise in standard errors)"""
    detail: str = ""


@dataclass
class ModelSeries:
    """Hourly series of one model (all its versions) in the window."""

    volume: dict[str, int] = field(default_factory=dict)
    mix: dict[str, dict[str, int]] = field(default_factory=dict)
    score_q: dict[str, list[float]] = field(default_factory=dict)
    latency_q: dict[str, list[float]] = field(default_factory=dict)
    failed: dict[str, int] = field(default_factory=dict)
    """decisions whose status is not ok, per hour"""


@dataclass
class ReportData:
    """Everything the HTML shows."""

    database: str
    model: str | None
    since: datetime
    until: datetime
    hours: list[datetime]
    models: dict[str, ModelSeries]
    incidents: dict[str, int]
    quarantine: dict[str, int]
    alerts: list[ShiftAlert]
    trail: TrailReport
    errors: list[VersionErrors] = field(default_factory=list)
    outcomes: list[VersionOutcomes] = field(default_factory=list)
    reviews: list[VersionReviews] = field(default_factory=list)
    unlinked: dict[str, int] = field(default_factory=dict)
    """outcomes and reviews made in the window whose decision is not in the store"""

    @property
    def total_decisions(self) -> int:
        return sum(sum(m.volume.values()) for m in self.models.values())

    @property
    def integrity_ok(self) -> bool:
        return self.trail.ok


def _hour_label(h: datetime) -> str:
    return h.strftime("%m-%d %H:00")


def build_report(
    client: Any,
    database: str,
    *,
    model: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    keyring: KeyRing | None = None,
) -> ReportData:
    """Query the rollups and the trail for the window ``[since, until)``."""
    until = until or datetime.now(UTC)
    since = since or until - timedelta(hours=24)
    if since >= until:
        raise ValueError("--since must be before now")
    db = database
    params: dict[str, Any] = {"since": since, "until": until, "model": model or ""}
    model_cond = "AND model_name = {model:String}" if model else ""
    hourly = client.query(
        "SELECT model_name, hour, countMerge(decisions), sumMapMerge(predictions), "
        "quantilesMerge(0.5, 0.9, 0.99)(score_q), quantilesMerge(0.5, 0.9, 0.99)(latency_q), "
        "sumMapMerge(statuses) "
        f"FROM {db}.decisions_hourly "
        "WHERE hour >= toStartOfHour({since:DateTime64(3, 'UTC')}) "
        "AND hour < {until:DateTime64(3, 'UTC')} "
        f"{model_cond} GROUP BY model_name, hour ORDER BY model_name, hour",
        parameters=params,
    ).result_rows
    start_hour = since.replace(minute=0, second=0, microsecond=0)
    hours = []
    h = start_hour
    while h < until:
        hours.append(h)
        h += timedelta(hours=1)
    models: dict[str, ModelSeries] = {}
    for name, hour, n, mix, score_q, latency_q, statuses in hourly:
        series = models.setdefault(str(name), ModelSeries())
        label = _hour_label(hour)
        series.volume[label] = int(n)
        series.mix[label] = {str(k): int(v) for k, v in mix.items()}
        series.failed[label] = sum(int(v) for k, v in statuses.items() if k != "ok")
        if not any(math.isnan(x) for x in score_q):
            series.score_q[label] = [float(x) for x in score_q]
        if not any(math.isnan(x) for x in latency_q):
            series.latency_q[label] = [float(x) for x in latency_q]
    incidents = dict(
        client.query(
            f"SELECT kind, countMerge(incidents) FROM {db}.incidents_hourly "
            "WHERE hour >= toStartOfHour({since:DateTime64(3, 'UTC')}) GROUP BY kind "
            "ORDER BY kind",
            parameters=params,
        ).result_rows
    )
    quarantine = dict(
        client.query(
            f"SELECT reason, countMerge(messages) FROM {db}.quarantine_hourly "
            "WHERE hour >= toStartOfHour({since:DateTime64(3, 'UTC')}) GROUP BY reason "
            "ORDER BY reason",
            parameters=params,
        ).result_rows
    )
    alerts = _shift_alerts(client, db, since, until, model)
    errors = version_errors(client, db, since, until, model)
    alerts += _error_alerts(errors)
    trail = TrailVerifier(client, db, keyring or KeyRing()).run(since=since, until=until)
    return ReportData(
        db,
        model,
        since,
        until,
        hours,
        dict(sorted(models.items())[:MAX_MODELS]),
        {str(k): int(v) for k, v in incidents.items()},
        {str(k): int(v) for k, v in quarantine.items()},
        alerts,
        trail,
        errors,
        version_outcomes(client, db, since, until, model),
        version_reviews(client, db, since, until, model),
        {t: unlinked(client, db, t, since, until) for t in ("outcomes", "reviews")},
    )


def _error_alerts(errors: list[VersionErrors]) -> list[ShiftAlert]:
    """An alert per model whose error rate rose against the previous window."""
    by_model: dict[str, list[int]] = {}
    for v in errors:
        t = by_model.setdefault(v.model, [0, 0, 0, 0])
        t[0] += v.previous_failed
        t[1] += v.previous_decisions
        t[2] += sum(v.failed.values())
        t[3] += v.decisions
    alerts = []
    for name, (f1, n1, f2, n2) in sorted(by_model.items()):
        if n1 < MIN_EVENTS or n2 < MIN_EVENTS:
            continue
        z = error_rate_z((f1, n1), (f2, n2))
        level = "alert" if z >= Z_ALERT else "moderate" if z >= Z_MODERATE else None
        if level is not None:
            detail = f"{f1 / n1:.1%} → {f2 / n2:.1%} of decisions failed"
            alerts.append(ShiftAlert(name, "error rate", z, level, "z", detail))
    return alerts


def _shift_alerts(
    client: Any, db: str, since: datetime, until: datetime, model: str | None
) -> list[ShiftAlert]:
    prev_start = since - (until - since)
    params: dict[str, Any] = {"a": prev_start, "b": since, "c": until, "model": model or ""}
    model_cond = "AND model_name = {model:String}" if model else ""
    window = (
        "occurred_at >= {a:DateTime64(3, 'UTC')} AND occurred_at < {c:DateTime64(3, 'UTC')} "
        + model_cond
    )
    cur = "occurred_at >= {b:DateTime64(3, 'UTC')}"
    mixes = client.query(
        f"SELECT model_name, {cur} AS current, prediction, count() FROM {db}.decisions FINAL "
        f"WHERE {window} GROUP BY model_name, current, prediction",
        parameters=params,
    ).result_rows
    by_model: dict[str, tuple[dict[str, float], dict[str, float]]] = {}
    for name, current, pred, n in mixes:
        prev_c, cur_c = by_model.setdefault(str(name), ({}, {}))
        (cur_c if current else prev_c)[str(pred)] = float(n)
    edges = dict(
        client.query(
            "SELECT model_name, quantilesExact(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)"
            f"(score) FROM {db}.decisions FINAL WHERE {window} AND NOT ({cur}) "
            "AND score IS NOT NULL GROUP BY model_name",
            parameters=params,
        ).result_rows
    )
    alerts: list[ShiftAlert] = []
    for name, (prev_c, cur_c) in sorted(by_model.items()):
        if sum(prev_c.values()) < MIN_EVENTS or sum(cur_c.values()) < MIN_EVENTS:
            continue
        _add_alert(alerts, name, "prediction mix", psi(prev_c, cur_c))
        cuts = sorted(set(edges.get(name) or []))
        if not cuts:
            continue
        bins = client.query(
            f"SELECT {cur} AS current, arrayCount(e -> score >= e, {{cuts:Array(Float64)}}) "
            f"AS bin, count() FROM {db}.decisions FINAL WHERE {window} "
            "AND model_name = {name:String} AND score IS NOT NULL GROUP BY current, bin",
            parameters={**params, "cuts": cuts, "name": name},
        ).result_rows
        prev_b: dict[str, float] = {}
        cur_b: dict[str, float] = {}
        for current, b, n in bins:
            (cur_b if current else prev_b)[str(b)] = float(n)
        if sum(prev_b.values()) >= MIN_EVENTS and sum(cur_b.values()) >= MIN_EVENTS:
            _add_alert(alerts, name, "score distribution", psi(prev_b, cur_b))
    return alerts


def _add_alert(alerts: list[ShiftAlert], model: str, measure: str, value: float) -> None:
    if value >= PSI_ALERT:
        alerts.append(ShiftAlert(model, measure, value, "alert"))
    elif value >= PSI_MODERATE:
        alerts.append(ShiftAlert(model, measure, value, "moderate"))


# -- HTML -------------------------------------------------------------------------------------

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 24px; color: #222; max-width: 1000px; }
h1 { font-size: 22px; } h2 { font-size: 18px; margin-top: 28px; border-bottom: 1px solid #ddd; }
figure { margin: 12px 0; } figcaption { font-weight: 600; margin-bottom: 4px; }
table { border-collapse: collapse; font-size: 13px; } td, th { border: 1px solid #ddd;
padding: 3px 8px; text-align: left; } .ok { color: #2a7d2a; } .bad { color: #b00020; }
.alert { background: #fde8e8; border-left: 4px solid #b00020; padding: 6px 10px; margin: 6px 0; }
.moderate { background: #fff6e0; border-left: 4px solid #e0a000; padding: 6px 10px; margin: 6px 0; }
"""

# Runs in the browser: counts the charts that were laid out with a size and drawn marks,
# so a headless-browser check (``--dump-dom``) sees what a reader would.
_SCRIPT = """
document.addEventListener('DOMContentLoaded', function () {
  var drawn = 0;
  document.querySelectorAll('svg.chart').forEach(function (svg) {
    var box = svg.getBoundingClientRect();
    var marks = svg.querySelectorAll('.mark').length;
    svg.setAttribute('data-rendered-width', Math.round(box.width));
    svg.setAttribute('data-marks', marks);
    if (box.width > 0 && box.height > 0 && marks > 0) { drawn += 1; }
  });
  document.body.setAttribute('data-charts-drawn', drawn);
});
"""


def render_html(data: ReportData) -> str:
    """The report as one HTML document (inline CSS, SVG and a tiny script; no network)."""
    labels = [_hour_label(h) for h in data.hours]
    parts = [
        f"<h1>decision-audit report: {escape(data.database)}"
        f"{' / ' + escape(data.model) if data.model else ''}</h1>",
        f"<p>Window {data.since.isoformat()} → {data.until.isoformat()}: "
        f"<b>{data.total_decisions}</b> decisions from {len(data.models)} model(s).</p>",
        "<h2>Shift alerts</h2>",
        f"<p>Population stability index against the previous window of the same length; "
        f"alert at PSI ≥ {PSI_ALERT}, moderate at ≥ {PSI_MODERATE}; an error rate that rose "
        f"by z ≥ {Z_ALERT} standard errors is an alert, z ≥ {Z_MODERATE} moderate; models "
        f"with fewer than {MIN_EVENTS} decisions in either window are not tested.</p>",
    ]
    if data.alerts:
        for a in data.alerts:
            detail = f": {escape(a.detail)}" if a.detail else ""
            parts.append(
                f'<div class="{a.level} shift-alert" data-model="{escape(a.model)}" '
                f'data-measure="{escape(a.measure)}">'
                f"<b>{escape(a.model)}</b>: {escape(a.measure)} moved, {a.statistic} "
                f"{a.value:.3f} ({a.level}){detail}</div>"
            )
    else:
        parts.append('<p class="ok">No shift above the thresholds.</p>')
    parts.append("<h2>Volume</h2>")
    parts.append(
        charts.line_chart(
            "Decisions per hour, by model",
            labels,
            {m: [float(s.volume.get(lbl, 0)) for lbl in labels] for m, s in data.models.items()},
        )
    )
    for name, s in data.models.items():
        parts.append(f"<h2>{escape(name)}</h2>")
        preds = sorted({p for mix in s.mix.values() for p in mix})
        top = sorted(preds, key=lambda p: -sum(mix.get(p, 0) for mix in s.mix.values()))[:9]
        series = {p: [float(s.mix.get(lbl, {}).get(p, 0)) for lbl in labels] for p in top}
        rest = [
            float(sum(v for p, v in s.mix.get(lbl, {}).items() if p not in top)) for lbl in labels
        ]
        if any(rest):
            series["(other)"] = rest
        parts.append(charts.stacked_bars(f"{name}: prediction mix per hour", labels, series))
        for title, q in (("score", s.score_q), ("latency (ms)", s.latency_q)):
            parts.append(
                charts.line_chart(
                    f"{name}: {title} quantiles per hour",
                    labels,
                    {
                        pname: [q[lbl][i] if lbl in q else None for lbl in labels]
                        for i, pname in enumerate(("p50", "p90", "p99"))
                    },
                )
            )
        if any(s.failed.values()):
            parts.append(
                charts.line_chart(
                    f"{name}: error rate per hour (share of decisions that failed)",
                    labels,
                    {
                        "error rate": [
                            s.failed.get(lbl, 0) / s.volume[lbl] if s.volume.get(lbl) else None
                            for lbl in labels
                        ]
                    },
                )
            )
    parts += _versions_html(data)
    parts.append("<h2>Integrity</h2>")
    parts.append(charts.bar_chart("Integrity incidents by kind", data.incidents))
    parts.append(charts.bar_chart("Quarantined messages by reason", data.quarantine))
    parts.append(_trail_html(data.trail))
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>decision-audit report {escape(data.database)}</title>"
        f"<style>{_STYLE}</style><script>{_SCRIPT}</script></head><body>"
        + "\n".join(parts)
        + "</body></html>"
    )


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.1%}"


def _table(css: str, head: list[str], rows: list[list[str]]) -> str:
    th = "".join(f"<th>{h}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table class='{css}'><tr>{th}</tr>{body}</table>"


def _versions_html(data: ReportData) -> list[str]:
    """Failed inferences, outcomes and reviews per model version."""
    parts = ["<h2>Failed inferences</h2>"]
    parts.append(
        _table(
            "errors",
            ["model", "version", "decisions", "failed", "error rate", "previous window"],
            [
                [
                    escape(v.model),
                    escape(v.version),
                    str(v.decisions),
                    escape(", ".join(f"{k} {n}" for k, n in sorted(v.failed.items())) or "0"),
                    _pct(v.rate),
                    _pct(v.previous_rate),
                ]
                for v in data.errors
            ],
        )
    )
    parts.append("<h2>Outcomes</h2>")
    linked = [o for o in data.outcomes if o.with_outcome]
    if not linked:
        parts.append('<p class="no-outcomes">No outcome recorded for the window\'s decisions.</p>')
    parts.append(
        _table(
            "outcomes",
            ["model", "version", "decisions", "with outcome", "accuracy", "mean abs. error"],
            [
                [
                    escape(o.model),
                    escape(o.version),
                    str(o.decisions),
                    f"{o.with_outcome} ({_pct(o.share)})",
                    f"{_pct(o.accuracy)} of {o.judged}" if o.judged else "-",
                    f"{o.mean_abs_error:.4g} over {o.numeric}"
                    if o.mean_abs_error is not None
                    else "-",
                ]
                for o in data.outcomes
            ],
        )
    )
    for o in linked:
        if not o.deciles:
            continue
        labels = [f"D{d.decile}" for d in o.deciles]
        parts.append(
            charts.line_chart(
                f"{o.model}@{o.version}: calibration by score decile "
                f"(mean score vs {o.calibrated_against})",
                labels,
                {
                    "mean score": [d.mean_score for d in o.deciles],
                    o.calibrated_against: [d.observed for d in o.deciles],
                },
            )
        )
    for table, n in data.unlinked.items():
        if n:
            parts.append(
                f'<p class="bad unlinked">{n} {table} recorded in the window name a decision '
                "that is not in the store (see the unknown_decision incidents).</p>"
            )
    parts.append("<h2>Human review</h2>")
    parts.append(
        _table(
            "reviews",
            [
                "model",
                "version",
                "decisions",
                "reviewed",
                "confirmed",
                "overridden",
                "escalated",
                "override rate",
            ],
            [
                [
                    escape(r.model),
                    escape(r.version),
                    str(r.decisions),
                    str(r.reviewed),
                    str(r.verdicts.get("confirm", 0)),
                    str(r.verdicts.get("override", 0)),
                    str(r.verdicts.get("escalate", 0)),
                    _pct(r.override_rate),
                ]
                for r in data.reviews
            ],
        )
    )
    return parts


def _trail_html(trail: TrailReport) -> str:
    verdict = (
        '<p class="ok integrity-verdict">VERIFIED'
        if trail.ok
        else '<p class="bad integrity-verdict">FAILED'
    )
    problems = sum(len(c.problems) for c in trail.chains)
    rows = "".join(
        f"<tr><td>{escape(c.producer_id)}</td><td>{c.producer_epoch}</td><td>{c.events}</td>"
        f"<td>{c.first_seq}..{c.last_seq}</td><td>{escape(c.key_id or 'unsigned')}</td>"
        f"<td>{c.attested_to if trail.keys_checked else 'not checked'}</td>"
        f'<td class="{"ok" if c.ok else "bad"}">'
        f"{'ok' if c.ok else escape('; '.join(p.kind for p in c.problems))}</td></tr>"
        for c in trail.chains
    )
    return (
        f"{verdict}</p><p>{trail.events} events in {len(trail.chains)} chain(s), "
        f"{problems} problem(s); signatures "
        f"{'checked' if trail.keys_checked else 'not checked (no --keys)'}.</p>"
        "<table class='chains'><tr><th>producer</th><th>epoch</th><th>events</th>"
        "<th>seq range</th><th>key</th><th>attested to</th><th>status</th></tr>"
        f"{rows}</table>"
    )
