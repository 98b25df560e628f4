"""Per model version, for the report: failed inferences, outcomes (accuracy or error,
calibration by score decile) and human reviews (override rate) of a window's decisions.

A decision's outcome and review are those naming its event id or its request id
(``decision_id``); the latest by ``observed_at`` (outcomes) or ``occurred_at`` (reviews)
counts when there are several. A prediction is right when it equals the outcome as recorded
(a label with a label, a JSON value with the same JSON value); when both are JSON numbers
the absolute error is measured instead. Calibration compares, per score decile of the
decisions that have an outcome, the mean score with the share of positive outcomes when
every outcome is binary (``true``/``false`` or ``1``/``0``), else with the share of right
predictions (the score read as the model's confidence).

The joins and ``IN`` subqueries between decisions and their follow-ups are ``GLOBAL``: on a
cluster an outcome or review is on the shard of its own chain, not its decision's, and
ClickHouse refuses a join of two Distributed tables (on one server ``GLOBAL`` changes
nothing).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

Z_ALERT = 3.0
Z_MODERATE = 2.0
"""an error rate that rose by this many standard errors (two-proportion z) is an alert or
a moderate shift"""


@dataclass
class VersionErrors:
    """Failed inferences of one model version in the window (and the window before)."""

    model: str
    version: str
    decisions: int
    failed: dict[str, int]
    """decisions per status other than ok"""
    previous_decisions: int = 0
    previous_failed: int = 0

    @property
    def rate(self) -> float:
        return sum(self.failed.values()) / self.decisions if self.decisions else 0.0

    @property
    def previous_rate(self) -> float | None:
        if not self.previous_decisions:
            return None
        return self.previous_failed / self.previous_decisions


@dataclass
class Decile:
    decile: int
    decisions: int
    mean_score: float
    observed: float


@dataclass
class VersionOutcomes:
    """Outcomes of one model version's decisions in the window."""

    model: str
    version: str
    decisions: int
    with_outcome: int
    judged: int
    """decisions with an outcome and a label prediction (accuracy)"""
    accuracy: float | None
    numeric: int
    """decisions with a numeric prediction and a numeric outcome (error)"""
    mean_abs_error: float | None
    calibrated_against: str
    """``outcome rate`` (binary outcomes) or ``accuracy``"""
    deciles: list[Decile] = field(default_factory=list)

    @property
    def share(self) -> float:
        return self.with_outcome / self.decisions if self.decisions else 0.0


@dataclass
class VersionReviews:
    """Human reviews of one model version's decisions in the window (latest per decision)."""

    model: str
    version: str
    decisions: int
    reviewed: int
    verdicts: dict[str, int]

    @property
    def override_rate(self) -> float | None:
        return self.verdicts.get("override", 0) / self.reviewed if self.reviewed else None


def _window(model: str | None) -> str:
    cond = "d.occurred_at >= {b:DateTime64(3, 'UTC')} AND d.occurred_at < {c:DateTime64(3, 'UTC')}"
    return cond + (" AND d.model_name = {model:String}" if model else "")


def version_errors(
    client: Any, db: str, since: datetime, until: datetime, model: str | None
) -> list[VersionErrors]:
    """Per model version: decisions and failed ones in ``[since, until)`` and the window of
    the same length before."""
    params = {"a": since - (until - since), "b": since, "c": until, "model": model or ""}
    model_cond = "AND model_name = {model:String}" if model else ""
    rows = client.query(
        "SELECT model_name, model_version, occurred_at >= {b:DateTime64(3, 'UTC')} AS current, "
        f"status, count() FROM {db}.decisions FINAL "
        "WHERE occurred_at >= {a:DateTime64(3, 'UTC')} AND occurred_at < {c:DateTime64(3, 'UTC')} "
        f"{model_cond} GROUP BY ALL ORDER BY model_name, model_version, status",
        parameters=params,
    ).result_rows
    out: dict[tuple[str, str], VersionErrors] = {}
    for name, version, current, status, n in rows:
        v = out.setdefault((str(name), str(version)), VersionErrors(str(name), str(version), 0, {}))
        if current:
            v.decisions += int(n)
            if status != "ok":
                v.failed[str(status)] = int(n)
        else:
            v.previous_decisions += int(n)
            v.previous_failed += int(n) if status != "ok" else 0
    return [v for v in out.values() if v.decisions]


def error_rate_z(previous: tuple[int, int], current: tuple[int, int]) -> float:
    """How many standard errors the error rate rose: ``(failed, decisions)`` before and now."""
    (f1, n1), (f2, n2) = previous, current
    if not n1 or not n2:
        return 0.0
    pooled = (f1 + f2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if se == 0:
        return 0.0
    return (f2 / n2 - f1 / n1) / se


_LINKED = """
SELECT d.event_id AS eid, any(d.model_name) AS m, any(d.model_version) AS v,
    any(d.score) AS score, any(d.prediction) AS p, any(d.prediction_is_json) AS pj,
    argMax(o.actual, o.observed_at) AS a, argMax(o.actual_is_json, o.observed_at) AS aj,
    max(o.decision_id != '') AS has
FROM {db}.decisions AS d FINAL
GLOBAL LEFT JOIN {db}.outcomes AS o FINAL
    ON o.decision_id = toString(d.event_id) OR o.decision_id = d.request_id
WHERE {window}
GROUP BY d.event_id
"""

# Per linked decision: numeric (both JSON numbers), right (label equal), positive (binary).
_JUDGED = """
SELECT m, v, score, has,
    has AND p IS NOT NULL AND pj AND aj AND isNotNull(toFloat64OrNull(assumeNotNull(p)))
        AND isNotNull(toFloat64OrNull(a)) AS numeric,
    abs(toFloat64OrZero(assumeNotNull(p)) - toFloat64OrZero(a)) AS abs_error,
    has AND p IS NOT NULL AND NOT numeric AS judged,
    assumeNotNull(p) = a AND pj = aj AS right,
    multiIf(aj AND a IN ('true', '1'), 1, aj AND a IN ('false', '0'), 0, -1) AS positive
FROM ({linked})
"""


def version_outcomes(
    client: Any, db: str, since: datetime, until: datetime, model: str | None
) -> list[VersionOutcomes]:
    """Per model version of the window's decisions: outcome share, accuracy or error, and
    calibration by score decile."""
    params = {"b": since, "c": until, "model": model or ""}
    judged = _JUDGED.format(linked=_LINKED.format(db=db, window=_window(model)))
    rows = client.query(
        "SELECT m, v, count(), countIf(has), countIf(judged), avgIf(right, judged), "
        "countIf(numeric), avgIf(abs_error, numeric), "
        "countIf(has AND score IS NOT NULL AND positive < 0) = 0 "
        f"FROM ({judged}) GROUP BY m, v ORDER BY m, v",
        parameters=params,
    ).result_rows
    out = {
        (str(m), str(v)): VersionOutcomes(
            str(m),
            str(v),
            int(n),
            int(has),
            int(nj),
            float(acc) if nj else None,
            int(nn),
            float(mae) if nn else None,
            "outcome rate" if binary else "accuracy",
        )
        for m, v, n, has, nj, acc, nn, mae, binary in rows
    }
    # Deciles of the scored decisions with an outcome (binary), or with a judged prediction.
    deciles = client.query(
        "SELECT m, v, decile, count(), avg(score), "
        "if(any(binary), avg(positive), avg(right)) FROM ("
        "SELECT *, ntile(10) OVER (PARTITION BY m, v ORDER BY score) AS decile FROM ("
        "SELECT *, min(positive) OVER (PARTITION BY m, v) >= 0 AS binary "
        f"FROM ({judged}) WHERE has AND score IS NOT NULL) WHERE binary OR judged) "
        "GROUP BY m, v, decile ORDER BY m, v, decile",
        parameters=params,
    ).result_rows
    for m, v, d, n, mean_score, observed in deciles:
        key = (str(m), str(v))
        if key in out:
            out[key].deciles.append(Decile(int(d), int(n), float(mean_score), float(observed)))
    return list(out.values())


def version_reviews(
    client: Any, db: str, since: datetime, until: datetime, model: str | None
) -> list[VersionReviews]:
    """Per model version of the window's decisions: reviewed decisions and their latest
    verdicts."""
    params = {"b": since, "c": until, "model": model or ""}
    rows = client.query(
        "SELECT m, v, count(), countIf(has), groupArrayIf(verdict, has) FROM ("
        "SELECT any(d.model_name) AS m, any(d.model_version) AS v, "
        "argMax(r.verdict, r.occurred_at) AS verdict, max(r.decision_id != '') AS has "
        f"FROM {db}.decisions AS d FINAL GLOBAL LEFT JOIN {db}.reviews AS r FINAL "
        "ON r.decision_id = toString(d.event_id) OR r.decision_id = d.request_id "
        f"WHERE {_window(model)} GROUP BY d.event_id) GROUP BY m, v ORDER BY m, v",
        parameters=params,
    ).result_rows
    out = []
    for m, v, n, reviewed, verdicts in rows:
        counts: dict[str, int] = {}
        for verdict in verdicts:
            counts[str(verdict)] = counts.get(str(verdict), 0) + 1
        out.append(VersionReviews(str(m), str(v), int(n), int(reviewed), counts))
    return out


def unlinked(client: Any, db: str, table: str, since: datetime, until: datetime) -> int:
    """How many of the ``table`` (outcomes, reviews) records made in the window name a
    decision that is not in the store."""
    params = {"b": since, "c": until}
    window = "occurred_at >= {b:DateTime64(3, 'UTC')} AND occurred_at < {c:DateTime64(3, 'UTC')}"
    named = f"SELECT decision_id FROM {db}.{table} WHERE {window}"
    rows = client.query(
        f"SELECT count() FROM {db}.{table} FINAL WHERE {window} AND decision_id GLOBAL NOT IN ("
        f"SELECT toString(event_id) FROM {db}.decisions "
        f"WHERE event_id GLOBAL IN (SELECT toUUIDOrZero(decision_id) FROM ({named})) "
        f"UNION ALL SELECT assumeNotNull(request_id) FROM {db}.decisions "
        f"WHERE request_id GLOBAL IN ({named}))",
        parameters=params,
    ).result_rows
    return int(rows[0][0])
