"""One step of the lookup benchmark, in its own process (one chDB directory each).

``python -m bench.lookup_run build --chdb DIR --db NAME --events N --chains K --days D``
    stores N signed events in K chains, a request id each, spread over D days, merged.
``python -m bench.lookup_run measure --chdb DIR --db NAME --reps R``
    times the lookups in the engine (each repetition a distinct random key), for every
    layout variant the store holds, chosen per query with settings
    (``ignore_data_skipping_indices``, ``optimize_use_projections``).
``python -m bench.lookup_run tune --chdb DIR --db NAME``
    adds what the measured migrations (:data:`LAYOUT_VERSIONS`) add, materialized, and
    reports the bytes on disk.
``python -m bench.lookup_run ship --chdb DIR --db NAME``
    drops what those migrations drop (0018: 0015's projection) and reports the bytes on disk.
``python -m bench.lookup_run keys --chdb DIR --db NAME --reps R``
    prints R random request ids of the store (for the ``trace`` runs).

Each prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import resource
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from bench.common import percentile
from bench.verify_scale_run import _keys
from bench.verify_store import build_store
from decision_audit.audit.trace import chain_rows_sql, lookup_sql
from decision_audit.clickhouse.connect import connect
from decision_audit.clickhouse.migrate import load_migrations, migrate
from decision_audit.producer.signing import Signer

LAYOUT_VERSIONS = (15, 18)
"""the migrations measured: the store is built without what they add, which is added after"""
_ADDED = re.compile(r"ADD (INDEX|PROJECTION) IF NOT EXISTS (\w+)")
OLD_INDEXES = ("idx_request_id", "idx_event_id")
NEW_INDEXES = ("idx_event_id_g1", "idx_prediction_id", "idx_request_id_g1")
LAYOUT_0015 = {*OLD_INDEXES, "idx_event_id_g1", "idx_prediction_id"}
SHIPPED = {*LAYOUT_0015, "idx_request_id_g1"}
# What each variant may use: skip indexes (of those above), whether projections, and other
# settings. lazy_final: the engine finds the rows a FINAL query's filter matches before it
# merges (query_plan_optimize_lazy_final, off by default in engine 26.9), the key-first form
# trace spells out by hand. 0018 drops 0015's projection; the store keeps it until the
# layouts are measured, so that 0015 and "the 0018 index with the projection" can be too.
# g1_only: 0018's fine filter without 0001's coarse one beside it.
VARIANTS: dict[str, tuple[set[str], bool, dict[str, Any]]] = {
    "base": (set(OLD_INDEXES), False, {}),
    "0015": (LAYOUT_0015, True, {}),
    "0018": (SHIPPED, False, {}),
    "0018_with_projection": (SHIPPED, True, {}),
    "g1_only": (SHIPPED - {"idx_request_id", "idx_event_id"}, False, {}),
    "0018_lazy_final": (SHIPPED, False, {"query_plan_optimize_lazy_final": 1}),
}
SHIPPED_VARIANT = "0018"
"""the layout the migrations ship: the lookup target is judged on it"""


_DROPS = re.compile(r"\bDROP (INDEX|PROJECTION)\b")


def _layout(db: str, *, drops: bool = False) -> tuple[str, ...]:
    """The measured migrations' statements: those that add (``drops``: those that drop)."""
    return tuple(
        stmt
        for m in load_migrations(db)
        if m.version in LAYOUT_VERSIONS
        for stmt in m.statements
        if bool(_DROPS.search(stmt)) == drops
    )


def _settings(
    use: set[str], projections: bool, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Settings that leave only the skip indexes in ``use`` (of those measured) to the query.

    The query condition cache is off: it remembers which granules a filter with these very
    keys matched, so every variant after the first would find the same keys' granules in it.
    """
    ignored = [i for i in (*OLD_INDEXES, *NEW_INDEXES) if i not in use]
    return {
        "use_query_condition_cache": 0,
        **({"ignore_data_skipping_indices": ",".join(ignored)} if ignored else {}),
        "optimize_use_projections": int(projections),
        **(extra or {}),
    }


def build(client: Any, a: argparse.Namespace) -> dict[str, Any]:
    migrate(client, a.db)
    for stmt in _layout(a.db):  # the layout before the migration measured
        for kind, name in _ADDED.findall(stmt):
            client.command(f"ALTER TABLE {a.db}.decisions DROP {kind} IF EXISTS {name}")
    t = time.perf_counter()
    step = timedelta(milliseconds=max(1, a.days * 86_400_000 // a.events))
    build_store(
        client,
        a.db,
        events=a.events,
        chains=a.chains,
        signer=Signer(_keys(a.chdb) / "bench.key"),
        unique_requests=True,
        step=step,
    )
    built = time.perf_counter() - t
    client.command(f"OPTIMIZE TABLE {a.db}.decisions FINAL")
    return {
        "events": a.events,
        "chains": a.chains,
        "days": a.days,
        "build_s": built,
        "optimize_s": time.perf_counter() - t - built,
        **_disk(client, a.db),
    }


def _disk(client: Any, db: str) -> dict[str, Any]:
    rows, parts_bytes = client.query(
        "SELECT sum(rows), sum(bytes_on_disk) FROM system.parts "
        "WHERE database = {db:String} AND table = 'decisions' AND active",
        parameters={"db": db},
    ).result_rows[0]
    projections = client.query(
        "SELECT name, sum(bytes_on_disk) FROM system.projection_parts "
        "WHERE database = {db:String} AND table = 'decisions' AND active GROUP BY name",
        parameters={"db": db},
    ).result_rows
    indexes = client.query(
        "SELECT name, data_compressed_bytes FROM system.data_skipping_indices "
        "WHERE database = {db:String} AND table = 'decisions'",
        parameters={"db": db},
    ).result_rows
    rollup = client.query(
        "SELECT sum(bytes_on_disk) FROM system.parts "
        "WHERE database = {db:String} AND table = 'decisions_hourly' AND active",
        parameters={"db": db},
    ).result_rows[0][0]
    n = max(1, int(rows))
    return {
        "rows": int(rows),
        "bytes_per_event": int(parts_bytes) / n,
        "projection_bytes_per_event": {str(k): int(v) / n for k, v in projections},
        "index_bytes_per_event": {str(k): int(v) / n for k, v in indexes},
        "rollup_bytes": int(rollup or 0),
    }


def disk(client: Any, a: argparse.Namespace) -> dict[str, Any]:
    return _disk(client, a.db)


def tune(client: Any, a: argparse.Namespace) -> dict[str, Any]:
    t = time.perf_counter()
    for stmt in _layout(a.db):
        client.command(stmt, settings={"mutations_sync": 2})
    took = {"+".join(f"{v:04d}" for v in LAYOUT_VERSIONS): time.perf_counter() - t}
    return {"materialize_s": took, **_disk(client, a.db)}


def ship(client: Any, a: argparse.Namespace) -> dict[str, Any]:
    """What the measured migrations drop, dropped: the store as they leave it."""
    for stmt in _layout(a.db, drops=True):
        client.command(stmt, settings={"mutations_sync": 2})
    return _disk(client, a.db)


def keys(client: Any, a: argparse.Namespace) -> dict[str, Any]:
    rows = client.query(
        f"SELECT request_id FROM {a.db}.decisions ORDER BY rand() LIMIT {int(a.reps)}"
    ).result_rows
    return {"request_ids": [str(r[0]) for r in rows]}


def _timed(client: Any, sql: str, params: list[dict[str, Any]], settings: dict[str, Any]) -> Any:
    out = []
    for p in params:
        t = time.perf_counter()
        client.query(sql, parameters=p, settings=settings)
        out.append((time.perf_counter() - t) * 1000)
    out.sort()
    return {"p50_ms": percentile(out, 50), "p99_ms": percentile(out, 99), "n": len(out)}


def measure(client: Any, a: argparse.Namespace) -> dict[str, Any]:
    db, reps = a.db, a.reps
    rng = random.Random(11)
    sample = client.query(
        f"SELECT request_id, toString(event_id), deployment_id, model_name, occurred_at "
        f"FROM {db}.decisions ORDER BY rand() LIMIT {reps}"
    ).result_rows
    lo, hi = client.query(
        f"SELECT min(occurred_at), max(occurred_at) FROM {db}.decisions"
    ).result_rows[0]
    span_h = max(1, int((hi - lo).total_seconds() // 3600))
    few = max(3, reps // 10)
    hours = [lo + timedelta(hours=rng.randrange(span_h)) for _ in range(reps)]
    ccs = ("DE", "FR", "US", "IN", "BR")
    deployments = [s[2] for s in sample]
    models = [s[3] for s in sample]
    queries: dict[str, tuple[str, list[dict[str, Any]]]] = {
        "by_request_id": (
            f"SELECT event_id, occurred_at, model_name, prediction, score, raw "
            f"FROM {db}.decisions FINAL WHERE request_id = {{r:String}}",
            [{"r": s[0]} for s in sample],
        ),
        "by_event_id": (
            f"SELECT event_id, occurred_at, model_name, prediction, score, raw "
            f"FROM {db}.decisions FINAL WHERE event_id = {{e:UUID}}",
            [{"e": s[1]} for s in sample],
        ),
        "deployment_hour": (
            f"SELECT event_id, occurred_at, request_id, prediction, score "
            f"FROM {db}.decisions FINAL WHERE deployment_id = {{d:String}} "
            "AND occurred_at >= {t:DateTime64(3, 'UTC')} "
            "AND occurred_at < {t:DateTime64(3, 'UTC')} + INTERVAL 1 HOUR ORDER BY occurred_at",
            [{"d": d, "t": t} for d, t in zip(deployments, hours, strict=True)],
        ),
        "model_day_rollup": (
            f"SELECT model_name, model_version, toDate(hour) AS day, countMerge(decisions) "
            f"FROM {db}.decisions_hourly WHERE hour >= {{t:DateTime('UTC')}} "
            "AND hour < {t:DateTime('UTC')} + INTERVAL 7 DAY GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
            [{"t": t.replace(minute=0, second=0, microsecond=0)} for t in hours[:few]],
        ),
        "model_day_base": (
            f"SELECT model_name, model_version, toDate(occurred_at) AS day, count() "
            f"FROM {db}.decisions FINAL WHERE occurred_at >= {{t:DateTime('UTC')}} "
            "AND occurred_at < {t:DateTime('UTC')} + INTERVAL 7 DAY "
            "GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
            [{"t": t.replace(minute=0, second=0, microsecond=0)} for t in hours[:few]],
        ),
        "input_field_day": (
            f"SELECT count() FROM {db}.decisions FINAL WHERE model_name = {{m:String}} "
            "AND occurred_at >= {t:DateTime64(3, 'UTC')} "
            "AND occurred_at < {t:DateTime64(3, 'UTC')} + INTERVAL 1 DAY "
            "AND JSONExtractString(inputs, 'cc') = {cc:String}",
            [
                {"m": m, "t": t, "cc": rng.choice(ccs)}
                for m, t in zip(models[:few], hours[:few], strict=True)
            ],
        ),
    }
    zero = "00000000-0000-0000-0000-000000000000"
    trace_cols = "event_hash, raw, event_id, occurred_at, model_name, request_id, seq, producer_id"
    queries["trace_find_or"] = (
        f"SELECT {trace_cols} FROM {db}.decisions FINAL "
        "WHERE event_id = {eid:UUID} OR request_id = {id:String} "
        "OR tags['prediction_id'] = {id:String} ORDER BY occurred_at DESC LIMIT 20",
        [{"eid": zero, "id": s[0]} for s in sample[:few]],  # reads every granule
    )
    queries["trace_find_split"] = (
        lookup_sql(db, trace_cols),
        [{"eid": zero, "id": s[0]} for s in sample],
    )
    chain_params = [
        {"p": pid, "e": epoch, "lo": max(1, seq - 1), "hi": seq - 1 + 1000}
        for pid, epoch, seq in client.query(
            f"SELECT producer_id, producer_epoch, seq FROM {db}.decisions "
            f"ORDER BY rand() LIMIT {reps}"
        ).result_rows
    ]
    queries["trace_chain_final"] = (
        f"SELECT seq, toString(event_id) AS eid, event_hash, raw FROM {db}.decisions FINAL "
        "WHERE producer_id = {p:String} AND producer_epoch = {e:UInt64} "
        "AND seq BETWEEN {lo:UInt64} AND {hi:UInt64} ORDER BY seq, eid",
        chain_params[:few],  # merges every row's key
    )
    queries["trace_chain_keys"] = (chain_rows_sql(db), chain_params)
    if a.full_scan:
        queries["input_field_all"] = (
            f"SELECT count() FROM {db}.decisions WHERE JSONExtractString(inputs, 'cc') = "
            "{cc:String} AND JSONExtractInt(inputs, 'age') > {age:UInt32}",
            [{"cc": rng.choice(ccs), "age": rng.randint(60, 85)} for _ in range(3)],
        )
    present = {
        str(r[0])
        for r in client.query(
            "SELECT name FROM system.data_skipping_indices WHERE database = {db:String} "
            "AND table = 'decisions'",
            parameters={"db": db},
        ).result_rows
    }
    variants = {
        k: v for k, v in VARIANTS.items() if k == "base" or (v[0] <= present and (k in a.variants))
    }
    out: dict[str, Any] = {"rows": sample and len(sample), "variants": sorted(variants)}
    for name, (sql, params) in queries.items():
        warm = dict(params[0])
        pointed = name in ("by_request_id", "by_event_id") or name.startswith("trace_")
        for variant, (use, projections, extra) in variants.items():
            if not pointed and (variant != "base" or len(variants) > 1):
                continue  # the layouts change only the point lookups
            s = _settings(use, projections, extra)
            client.query(sql, parameters=warm, settings=s)  # loads the marks and indexes once
            out[f"{name}@{variant}"] = _timed(client, sql, params, s)
    _check_same(client, queries["by_request_id"][0], sample[:20], variants)
    out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def _check_same(client: Any, sql: str, sample: list[Any], variants: dict[str, Any]) -> None:
    """Every variant finds the same rows."""
    for s in sample:
        found = {
            v: sorted(
                str(r[0])
                for r in client.query(
                    sql, parameters={"r": s[0]}, settings=_settings(*u)
                ).result_rows
            )
            for v, u in variants.items()
        }
        if len({tuple(f) for f in found.values()}) != 1 or not found["base"]:
            raise SystemExit(f"variants disagree on request {s[0]}: {found}")


def main(argv: list[str] | None = None) -> None:
    steps: dict[str, Callable[[Any, argparse.Namespace], dict[str, Any]]] = {
        "build": build,
        "measure": measure,
        "tune": tune,
        "ship": ship,
        "keys": keys,
        "disk": disk,
    }
    p = argparse.ArgumentParser(prog="python -m bench.lookup_run")
    p.add_argument("step", choices=list(steps))
    p.add_argument("--chdb", required=True)
    p.add_argument("--db", required=True)
    p.add_argument("--events", type=int, default=0)
    p.add_argument("--chains", type=int, default=100)
    p.add_argument("--days", type=int, default=28)
    p.add_argument("--reps", type=int, default=200)
    p.add_argument("--full-scan", action="store_true", help="also filter every row's inputs")
    p.add_argument("--variants", nargs="*", default=list(VARIANTS))
    a = p.parse_args(argv)
    client = connect(f"chdb://{a.chdb}")
    print(json.dumps(steps[a.step](client, a), default=str), flush=True)
    os._exit(0)


if __name__ == "__main__":
    main()
