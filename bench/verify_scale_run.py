"""One step of the verify-at-scale benchmark, in its own process (one chDB directory each).

``python -m bench.verify_scale_run build --chdb DIR --db NAME --events N --chains K``
    stores N signed events in K chains (:mod:`bench.verify_store`), merged.
``python -m bench.verify_scale_run grow --chdb DIR --db NAME --events N``
    appends N more events, continuing the stored chains round-robin.
``python -m bench.verify_scale_run verify --chdb DIR --db NAME [--python] [--incremental]``
    runs ``verify`` with all checks (the keys next to the directory) and prints its time.
``python -m bench.verify_scale_run heads --chdb DIR --db NAME --rows N --chains K``
    fills a store with N synthetic rows in K chains in SQL (only what chain-head recovery
    reads), then times recovering every head from chain_heads and by aggregating decisions.
``python -m bench.verify_scale_run assign --chdb DIR --db NAME``
    on that store, a real worker (a Tansu broker) takes one new event for every chain;
    times its partition assignment to its first insert, with heads from chain_heads and
    with heads aggregated over decisions (what the worker did before migration 0007).

Each prints one JSON line; ``peak_rss_mib`` is the process's peak resident set (the
embedded engine included).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
from pathlib import Path
from typing import Any

from bench.verify_store import build_store, grow_store
from decision_audit.audit.verify import TrailVerifier
from decision_audit.clickhouse.connect import connect
from decision_audit.clickhouse.migrate import migrate
from decision_audit.contract.keys import KeyRing
from decision_audit.producer.signing import Signer, generate_keypair
from decision_audit.worker.chain_heads import ChainReader


def _keys(chdb: str) -> Path:
    keys = Path(chdb + "-keys")
    if not (keys / "bench.key").exists():
        generate_keypair(keys, "bench")
    return keys


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def build(client: Any, a: argparse.Namespace) -> dict[str, Any]:
    migrate(client, a.db)
    t = time.perf_counter()
    build_store(
        client, a.db, events=a.events, chains=a.chains, signer=Signer(_keys(a.chdb) / "bench.key")
    )
    client.command(f"OPTIMIZE TABLE {a.db}.decisions FINAL")
    parts = client.query(
        "SELECT sum(rows), sum(bytes_on_disk) FROM system.parts "
        "WHERE database = {db:String} AND table = 'decisions' AND active",
        parameters={"db": a.db},
    ).result_rows[0]
    return {
        "events": a.events,
        "chains": a.chains,
        "build_s": time.perf_counter() - t,
        "disk_bytes_per_event": int(parts[1]) / max(1, int(parts[0])),
    }


def grow(client: Any, a: argparse.Namespace) -> dict[str, Any]:
    t = time.perf_counter()
    grow_store(client, a.db, events=a.events, signer=Signer(_keys(a.chdb) / "bench.key"))
    return {"events": a.events, "grow_s": time.perf_counter() - t}


def verify(client: Any, a: argparse.Namespace) -> dict[str, Any]:
    keyring = KeyRing.load(_keys(a.chdb))
    verifier = TrailVerifier(client, a.db, keyring, engine=not a.python)
    t, cpu = time.perf_counter(), _cpu()
    report = verifier.run(incremental=a.incremental, record=a.incremental)
    wall, cpu = time.perf_counter() - t, _cpu() - cpu
    if not report.ok:
        problems = [(c.producer_id, c.problems[:3]) for c in report.chains if not c.ok][:3]
        raise SystemExit(f"verify found problems in the bench store: {problems}")
    return {
        "events": report.events,
        "chains": len(report.chains),
        "seconds": wall,
        "cpu_s": cpu,
        "ev_s": report.events / wall if wall else 0.0,
        "python_chains": verifier.python_chains,
        "attested": sum(c.attested_to for c in report.chains),
        "peak_rss_mib": _rss_mib(),
    }


def heads(client: Any, a: argparse.Namespace) -> dict[str, Any]:
    """Chain-head recovery at a large store: the chain_heads table against the aggregation."""
    migrate(client, a.db)
    t = time.perf_counter()
    client.command(
        f"INSERT INTO {a.db}.decisions (event_id, occurred_at, model_name, model_version, "
        "inputs, prediction, prediction_is_json, tags, producer_id, producer_epoch, seq, "
        "prev_hash, event_hash, schema_fingerprint, raw, kafka_partition, kafka_offset) "
        "SELECT generateUUIDv7(number), toDateTime64('2026-01-05', 3, 'UTC') + "
        "toIntervalMillisecond(number), 'm', '1', '{}', 'yes', false, map(), "
        "concat('heads-', toString(number % {k:UInt64})), 1, "
        "intDiv(number, {k:UInt64}) + 1, unhex(hex(SHA256(toString(number)))), "
        "unhex(hex(SHA256(toString(number + 1)))), 0, '', 0, number "
        "FROM numbers({n:UInt64})",
        parameters={"n": a.rows, "k": a.chains},
        settings={"max_insert_block_size": 100_000},
    )
    client.command(f"OPTIMIZE TABLE {a.db}.decisions FINAL")
    fill_s = time.perf_counter() - t
    chains = {(f"heads-{k}", 1) for k in range(a.chains)}
    reader = ChainReader(client, a.db)

    def aggregated(wanted: set[tuple[str, int]]) -> dict[tuple[str, int], tuple[int, bytes]]:
        # What ChainReader.chain_heads asked before migration 0007.
        result = client.query(
            f"SELECT producer_id, producer_epoch, max(seq), argMax(event_hash, seq) AS head "
            f"FROM {a.db}.decisions "
            "WHERE (producer_id, producer_epoch) IN {chains:Array(Tuple(String, UInt64))} "
            "GROUP BY producer_id, producer_epoch",
            parameters={"chains": sorted(wanted)},
            column_formats={"head": "bytes"},
        )
        return {(str(p), int(e)): (int(s), bytes(h)) for p, e, s, h in result.result_rows}

    def timed(fn: Any, wanted: Any) -> tuple[float, Any]:
        best, out = float("inf"), None
        for _ in range(5):
            t0 = time.perf_counter()
            out = fn(wanted)
            best = min(best, time.perf_counter() - t0)
        return best, out

    one = {next(iter(sorted(chains)))}
    reader.chain_heads(chains)  # warm: the first read of a part loads its marks
    aggregated(chains)
    table_s, from_table = timed(reader.chain_heads, chains)
    agg_s, from_agg = timed(aggregated, chains)
    table_one_s, _ = timed(reader.chain_heads, one)
    agg_one_s, _ = timed(aggregated, one)
    if from_table != from_agg or len(from_table) != a.chains:
        raise SystemExit("chain_heads and the aggregation disagree")
    # A chain-order projection (measured, not kept in migration 0007): a worker's check of
    # redelivered events below the head, and one chain's seq range, without and with it.
    links = {(f"heads-{k}", 1, 2) for k in range(0, a.chains, max(1, a.chains // 100))}

    def hashes(wanted: set[Any]) -> Any:
        return sorted(reader.stored_hashes(wanted).items())

    def chain_range(_: Any) -> Any:
        return client.query(
            f"SELECT seq, event_hash FROM {a.db}.decisions WHERE producer_id = 'heads-7' "
            "AND producer_epoch = 1 AND seq BETWEEN 50 AND 70 ORDER BY seq"
        ).result_rows

    scan_s, without = timed(hashes, links)
    range_scan_s, range_without = timed(chain_range, None)
    client.command(
        f"ALTER TABLE {a.db}.decisions MODIFY SETTING deduplicate_merge_projection_mode = 'rebuild'"
    )
    client.command(
        f"ALTER TABLE {a.db}.decisions ADD PROJECTION chain_order "
        "(SELECT _part_offset ORDER BY producer_id, producer_epoch, seq)"
    )
    client.command(
        f"ALTER TABLE {a.db}.decisions MATERIALIZE PROJECTION chain_order",
        settings={"mutations_sync": 2},
    )
    hashes(links)  # warm
    proj_s, with_proj = timed(hashes, links)
    range_proj_s, range_with = timed(chain_range, None)
    if with_proj != without or range_with != range_without:
        raise SystemExit("the projection changed a result")
    projection = client.query(
        "SELECT sum(bytes_on_disk) FROM system.projection_parts "
        "WHERE database = {db:String} AND table = 'decisions' AND active",
        parameters={"db": a.db},
    ).result_rows[0][0]
    return {
        "rows": a.rows,
        "chains": a.chains,
        "fill_s": fill_s,
        "heads_all_table_ms": table_s * 1000,
        "heads_all_aggregate_ms": agg_s * 1000,
        "heads_one_table_ms": table_one_s * 1000,
        "heads_one_aggregate_ms": agg_one_s * 1000,
        "stored_hashes_links": len(links),
        "stored_hashes_projection_ms": proj_s * 1000,
        "stored_hashes_scan_ms": scan_s * 1000,
        "chain_range_projection_ms": range_proj_s * 1000,
        "chain_range_scan_ms": range_scan_s * 1000,
        "projection_bytes_per_event": int(projection or 0) / a.rows,
        "chain_heads_rows": int(
            client.query(f"SELECT count() FROM {a.db}.chain_heads").result_rows[0][0]
        ),
    }


def _continuing(heads_by_chain: dict[tuple[str, int], tuple[int, bytes]], step: int) -> list[Any]:
    """One valid event per chain, ``step`` seqs past its stored head (the ones between
    linked in order), as ``(key, value, headers)``; returns the messages of the last step."""
    from bench.common import make_calls
    from decision_audit.contract import chain_hash, default_codec, uuid7
    from decision_audit.contract.headers import EVENT_HASH_HEADER
    from decision_audit.contract.models import utc_now
    from tests.helpers import event_record

    codec = default_codec()
    schema = codec.registry.latest("decision_event")
    calls = make_calls(64, seed=3)
    steps: list[list[Any]] = []
    state = dict(heads_by_chain)
    for _ in range(step):
        messages = []
        for i, ((pid, epoch), (seq, head)) in enumerate(sorted(state.items())):
            c = calls[i % len(calls)]
            rec = event_record(
                pid,
                epoch,
                seq + 1,
                head,
                event_id=str(uuid7()),
                occurred_at=utc_now(),
                model_name=c.model_name,
                model_version=c.model_version,
                prediction=c.prediction,
                score=c.score,
            )
            body = codec.encode_body(schema, rec)
            h = chain_hash(head, body)
            messages.append((pid.encode(), codec.frame(schema, body), [(EVENT_HASH_HEADER, h)]))
            state[(pid, epoch)] = (seq + 1, h)
        steps.append(messages)
    return steps


def assign(client: Any, a: argparse.Namespace) -> dict[str, Any]:
    """Assignment → first insert of a real worker, heads from the table or aggregated."""
    import uuid

    from decision_audit.devtools.tansu_broker import LocalBroker
    from decision_audit.worker import loop, store
    from decision_audit.worker.settings import WorkerSettings
    from decision_audit.worker.topics import ensure_topics
    from tests.helpers import send_raw

    chains = {
        (str(p), int(e))
        for p, e in client.query(
            f"SELECT producer_id, producer_epoch FROM {a.db}.chain_heads GROUP BY 1, 2"
        ).result_rows
    }
    reader = ChainReader(client, a.db)
    stored = reader.chain_heads(chains)
    steps = _continuing(stored, 2)
    table_heads = ChainReader.chain_heads

    def aggregated(self: ChainReader, wanted: set[Any], table: str = "decisions") -> Any:
        result = self.client.query(
            f"SELECT producer_id, producer_epoch, max(seq), argMax(event_hash, seq) AS head "
            f"FROM {self.database}.{table} "
            "WHERE (producer_id, producer_epoch) IN {chains:Array(Tuple(String, UInt64))} "
            "GROUP BY producer_id, producer_epoch",
            parameters={"chains": sorted(wanted)},
            column_formats={"head": "bytes"},
        )
        return {(str(p), int(e)): (int(s), bytes(h)) for p, e, s, h in result.result_rows}

    marks: dict[str, float] = {}
    real_assign = loop.Worker._on_assign
    real_copy = store.Store.copy_staged

    def on_assign(self: Any, consumer: Any, partitions: Any) -> None:
        marks.setdefault("assigned", time.perf_counter())
        real_assign(self, consumer, partitions)

    def copy_staged(self: Any, select: str, token: str) -> None:
        real_copy(self, select, token)
        marks.setdefault("inserted", time.perf_counter())

    out: dict[str, Any] = {"chains": len(chains)}
    with LocalBroker() as broker:
        for n, (label, heads_fn) in enumerate((("aggregate", aggregated), ("table", table_heads))):
            topic = f"assign-{label}-{uuid.uuid4().hex[:6]}"
            ensure_topics(broker.bootstrap_servers, {topic: 1, f"{topic}-dlq": 1})
            send_raw(broker.bootstrap_servers, topic, steps[n])
            settings = WorkerSettings(
                bootstrap_servers=broker.bootstrap_servers,
                clickhouse_url=f"chdb://{a.chdb}",
                database=a.db,
                topic=topic,
                dlq_topic=f"{topic}-dlq",
                group=f"g-{uuid.uuid4().hex[:8]}",
                batch_size=len(chains),
                flush_interval=0.05,
                exit_when_idle=1.0,
                session_timeout_ms=2000,
                create_topics=False,
            )
            marks.clear()
            ChainReader.chain_heads = heads_fn  # type: ignore[method-assign]
            loop.Worker._on_assign = on_assign  # type: ignore[method-assign]
            store.Store.copy_staged = copy_staged  # type: ignore[method-assign]
            try:
                stats = loop.Worker(settings, client=client).run()
            finally:
                ChainReader.chain_heads = table_heads  # type: ignore[method-assign]
                loop.Worker._on_assign = real_assign  # type: ignore[method-assign]
                store.Store.copy_staged = real_copy  # type: ignore[method-assign]
            if stats.inserted != len(chains) or stats.quarantined_total:
                raise SystemExit(f"{label}: inserted {stats.inserted}, {stats.quarantined}")
            out[f"assign_to_insert_{label}_ms"] = (marks["inserted"] - marks["assigned"]) * 1000
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.verify_scale_run")
    p.add_argument("step", choices=("build", "grow", "verify", "heads", "assign"))
    p.add_argument("--chdb", required=True)
    p.add_argument("--db", required=True)
    p.add_argument("--events", type=int, default=0)
    p.add_argument("--chains", type=int, default=10)
    p.add_argument("--rows", type=int, default=0)
    p.add_argument("--python", action="store_true", help="verify event by event in Python")
    p.add_argument("--incremental", action="store_true")
    a = p.parse_args(argv)
    client = connect(f"chdb://{a.chdb}")
    steps = {"build": build, "grow": grow, "verify": verify, "heads": heads, "assign": assign}
    print(json.dumps(steps[a.step](client, a)), flush=True)
    os._exit(0)


if __name__ == "__main__":
    main()
