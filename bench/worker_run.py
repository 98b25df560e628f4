"""One consumer in its own process (chDB allows one data directory per process).

``python -m bench.worker_run --mode ours|naive --bootstrap B --topic T --chdb DIR --expect N``
consumes until N messages are stored, then prints one JSON line: wall time from the first
message fetched to the last row stored, process CPU seconds (all threads: Python, librdkafka,
the chDB engine), peak RSS, the stored row count, and optionally latency quantiles and bytes
on disk.

With ``--expect stdin`` the count arrives later as a line ``EXPECT N`` on stdin, and the
process prints ``READY`` once its first row is stored (the latency benchmark uses this).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import resource
import sys
import threading
import time
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException

from decision_audit.clickhouse.connect import connect
from decision_audit.clickhouse.migrate import migrate
from decision_audit.worker.settings import WorkerSettings

DB = "audit"
# The naive consumer flushes like the worker does by default.
BATCH_ROWS: int = WorkerSettings.model_fields["batch_size"].default
FLUSH_SECONDS: float = WorkerSettings.model_fields["flush_interval"].default
HEADER = 10  # Avro single-object header: C3 01 + 8-byte fingerprint


class Progress:
    """Shared between the consuming loop and the watcher: expected count, timestamps."""

    def __init__(self, expect: int | None) -> None:
        self.expect = expect
        self.started = time.perf_counter()
        self.cpu_started = time.process_time()
        self.first_message: float | None = None
        self.done_at: float | None = None
        self.cpu_done: float | None = None
        self.ready_printed = False
        self.timed_out = False

    def update(self, processed: int) -> bool:
        """Called with the count stored so far; True once everything expected is stored."""
        if processed > 0 and not self.ready_printed:
            self.ready_printed = True
            print("READY", flush=True)
        if self.expect is not None and processed >= self.expect and self.done_at is None:
            self.done_at = time.perf_counter()
            self.cpu_done = time.process_time()
        return self.done_at is not None

    def saw_message(self) -> None:
        if self.first_message is None:
            self.first_message = time.perf_counter()


def read_expect(progress: Progress) -> None:
    for line in sys.stdin:
        if line.startswith("EXPECT "):
            progress.expect = int(line.split()[1])
            return


def run_ours(a: argparse.Namespace, client: Any, progress: Progress) -> dict[str, Any]:
    import decision_audit.worker.loop as worker_module

    base = worker_module.Consumer

    class TimedConsumer(base):  # type: ignore[misc, valid-type]
        """Notes when the first message arrives (the group join is not throughput)."""

        def consume(self, *args: Any, **kwargs: Any) -> Any:
            msgs = super().consume(*args, **kwargs)
            if msgs:
                progress.saw_message()
            return msgs

    worker_module.Consumer = TimedConsumer
    settings = WorkerSettings(
        bootstrap_servers=a.bootstrap,
        topic=a.topic,
        dlq_topic=a.topic + "-dlq",
        model_events_topic=a.topic + "-model-events",
        group=a.group,
        clickhouse_url=f"chdb://{a.chdb}",
        database=DB,
        session_timeout_ms=a.session_timeout_ms,
        create_topics=False,
    )
    worker = worker_module.Worker(settings, client=client)

    def watch() -> None:
        deadline = time.monotonic() + a.deadline
        while True:
            if progress.update(worker.stats.consumed):
                break
            if time.monotonic() > deadline:
                progress.timed_out = True
                break
            time.sleep(0.005)
        worker.stop()

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    profile(a, worker.run)
    watcher.join()
    st = worker.stats
    return {
        "consumed": st.consumed,
        "inserted": st.inserted,
        "duplicates": st.duplicates,
        "quarantined": st.quarantined_total,
        "batches": st.batches,
    }


def run_naive(a: argparse.Namespace, client: Any, progress: Progress) -> dict[str, Any]:
    """The obvious consumer: poll one message, decode it to a dict, insert rows every 10k.

    It trusts everything: no hash, key or field checks, no dedupe, no quarantine, no DLQ.
    """
    from fastavro import schemaless_reader

    from decision_audit.contract.schemas import shipped_schemas

    registry = shipped_schemas()
    latest = registry.latest("decision_event")
    writers = {sch.fingerprint: sch.parsed for sch in registry if sch.name == latest.name}
    table_columns = {
        r[0]
        for r in client.query(
            "SELECT name FROM system.columns WHERE database = {db:String} AND table = 'decisions'",
            parameters={"db": DB},
        ).result_rows
    }
    fields = [f["name"] for f in latest.parsed["fields"] if f["name"] in table_columns]
    columns = [*fields, "raw", "kafka_partition", "kafka_offset"]
    consumer = Consumer(
        {
            "bootstrap.servers": a.bootstrap,
            "group.id": a.group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "session.timeout.ms": a.session_timeout_ms,
        }
    )
    consumer.subscribe([a.topic])
    rows: list[list[Any]] = []
    stored = 0
    skipped = 0
    batch_started = 0.0
    value_bytes = 0
    deadline = time.monotonic() + a.deadline

    def loop() -> None:
        nonlocal rows, stored, skipped, batch_started, value_bytes
        while True:
            msg = consumer.poll(0.1)
            now = time.monotonic()
            if msg is not None and msg.error() is None:
                progress.saw_message()
                value = msg.value()
                value_bytes += len(value)
                writer = writers.get(value[2:HEADER])
                if writer is None:  # not a decision event (e.g. a checkpoint): skip it
                    skipped += 1
                else:
                    rec = schemaless_reader(io.BytesIO(value[HEADER:]), writer)
                    row = [rec.get(f) for f in fields]
                    row += [value, msg.partition(), msg.offset()]
                    if not rows:
                        batch_started = now
                    rows.append(row)
            if rows and (len(rows) >= BATCH_ROWS or now - batch_started >= FLUSH_SECONDS):
                client.insert(f"{DB}.decisions", rows, column_names=columns)
                try:
                    consumer.commit(asynchronous=False)
                except KafkaException as exc:  # after a rebalance: nothing of ours to commit
                    if exc.args[0].code() != KafkaError._NO_OFFSET:
                        raise
                stored += len(rows)
                rows = []
            if progress.update(stored + skipped):
                return
            if now > deadline:
                progress.timed_out = True
                return

    try:
        profile(a, loop)
    finally:
        consumer.close()
    return {
        "consumed": stored + skipped,
        "inserted": stored,
        "skipped": skipped,
        "value_bytes": value_bytes,
    }


def profile(a: argparse.Namespace, fn: Any) -> None:
    if not a.profile:
        fn()
        return
    prof = cProfile.Profile()
    prof.enable()
    try:
        fn()
    finally:
        prof.disable()
        prof.dump_stats(a.profile)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.worker_run")
    p.add_argument("--mode", choices=("ours", "naive"), required=True)
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--topic", required=True)
    p.add_argument("--group", required=True)
    p.add_argument("--chdb", required=True, help="absolute path of a fresh chDB directory")
    p.add_argument("--expect", required=True, help="messages to store, or 'stdin'")
    p.add_argument("--deadline", type=float, default=600.0, help="give up after this long")
    p.add_argument("--session-timeout-ms", type=int, default=6000)
    p.add_argument("--latency-producer", help="report ingested_at - occurred_at of its rows")
    p.add_argument("--disk", action="store_true", help="report bytes on disk (after merging)")
    p.add_argument("--profile", help="write cProfile stats of the consuming thread here")
    a = p.parse_args(argv)

    client = connect(f"chdb://{a.chdb}")
    migrate(client, DB)
    progress = Progress(None if a.expect == "stdin" else int(a.expect))
    if a.expect == "stdin":
        threading.Thread(target=read_expect, args=(progress,), daemon=True).start()
    progress.started = time.perf_counter()
    progress.cpu_started = time.process_time()
    counters = (run_ours if a.mode == "ours" else run_naive)(a, client, progress)
    if progress.timed_out or progress.done_at is None:
        print(f"timed out after {a.deadline}s: {counters}", file=sys.stderr, flush=True)
        os._exit(3)
    assert progress.first_message is not None and progress.cpu_done is not None
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    stored = int(client.query(f"SELECT count() FROM {DB}.decisions").result_rows[0][0])
    out: dict[str, Any] = {
        "mode": a.mode,
        "expected": progress.expect,
        "stored": stored,
        "wall_s": progress.done_at - progress.first_message,
        "wall_with_join_s": progress.done_at - progress.started,
        "cpu_s": progress.cpu_done - progress.cpu_started,
        "peak_rss_bytes": peak_rss,
        **counters,
    }
    if a.latency_producer:
        row = client.query(
            "SELECT count(), quantileExact(0.5)(d), quantileExact(0.99)(d), max(d) FROM "
            "(SELECT toUnixTimestamp64Milli(ingested_at) - toUnixTimestamp64Milli(occurred_at)"
            f" AS d FROM {DB}.decisions WHERE producer_id = {{p:String}})",
            parameters={"p": a.latency_producer},
        ).result_rows[0]
        out["latency"] = {
            "events": int(row[0]),
            "p50_ms": float(row[1]),
            "p99_ms": float(row[2]),
            "max_ms": float(row[3]),
        }
    if a.disk:
        out["avg_message_bytes"] = float(
            client.query(f"SELECT avg(length(raw)) FROM {DB}.decisions").result_rows[0][0]
        )
        out["disk_unmerged"] = _disk(client)
        client.command(f"OPTIMIZE TABLE {DB}.decisions FINAL")
        out["disk_merged"] = _disk(client)
    print(json.dumps(out), flush=True)
    # Skip interpreter and engine teardown: the caller deletes the directory anyway.
    os._exit(0)


def _disk(client: Any) -> dict[str, int]:
    row = client.query(
        "SELECT sum(bytes_on_disk), sum(rows), count() FROM system.parts "
        "WHERE database = {db:String} AND table = 'decisions' AND active",
        parameters={"db": DB},
    ).result_rows[0]
    return {"bytes": int(row[0]), "rows": int(row[1]), "parts": int(row[2])}


if __name__ == "__main__":
    main()
