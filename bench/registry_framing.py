"""What reading the Confluent framing costs the worker: checking one batch, both framings.

``python -m bench.registry_framing [--events 20000] [--rounds 9]``

The same chained events, once in single-object encoding and once framed ``00`` + schema id
(confluent-kafka's in-memory registry), are checked by the worker's
:class:`~decision_audit.worker.batch.BatchChecker` (``prepare``: decode or stage, verify,
follow the chains) on both paths — ClickHouse (chDB) staging and the Python verifier —
under the worker's garbage-collector setting. Rounds alternate the framings; the best round
of each is printed (a shared machine's load only ever adds). Kafka and the insert are left
out: they cost the same for both framings.
"""

from __future__ import annotations

import argparse
import gc
import json
import tempfile
import time

import prometheus_client
from confluent_kafka.schema_registry import SchemaRegistryClient

from decision_audit.clickhouse.connect import connect
from decision_audit.clickhouse.migrate import migrate
from decision_audit.contract import chain_hash, default_codec, genesis_hash
from decision_audit.contract.fields import DECISION_EVENT
from decision_audit.contract.headers import EVENT_HASH_HEADER
from decision_audit.contract.ids import uuid7_str
from decision_audit.contract.keys import KeyRing
from decision_audit.contract.models import utc_now
from decision_audit.contract.registry_codec import (
    RegistryCodec,
    confluent_header,
    resolve_schema_id,
    subject_name,
)
from decision_audit.worker.batch import BatchChecker
from decision_audit.worker.gc_tuning import tuned_gc
from decision_audit.worker.received import Received
from decision_audit.worker.settings import WorkerSettings

CHAINS = 8


def _batches(events: int, header: bytes) -> tuple[list[Received], list[Received]]:
    codec = default_codec()
    schema = codec.registry.latest("decision_event")
    single, confluent = [], []
    for c in range(CHAINS):
        pid = f"bench-{c}"
        prev = genesis_hash(pid, 1)
        for seq in range(1, events // CHAINS + 1):
            rec = dict.fromkeys(DECISION_EVENT.names)
            rec.update(
                event_id=uuid7_str(time.time_ns() // 1_000_000),
                occurred_at=utc_now(),
                model_name="credit-risk",
                model_version="2.3.0",
                inputs=json.dumps({"age": 41, "income": 52000.0 + seq, "region": "eu-west"}),
                prediction="approve",
                prediction_is_json=False,
                score=0.91,
                tags={"team": "risk"},
                producer_id=pid,
                producer_epoch=1,
                seq=seq,
                prev_hash=prev,
            )
            body = codec.encode_body(schema, rec)
            prev = chain_hash(prev, body)
            m = Received("decisions", c % 4, seq, pid.encode(), b"", [(EVENT_HASH_HEADER, prev)])
            single.append(m._replace(value=codec.frame(schema, body)))
            confluent.append(m._replace(value=header + body))
    return single, confluent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    sr = SchemaRegistryClient.new_client({"url": "mock://bench"})
    shipped = default_codec().registry
    decision = shipped.latest("decision_event")
    schema_id = resolve_schema_id(
        sr, subject_name("topic", "decisions", decision), decision, auto_register=True
    )
    single, confluent = _batches(args.events, confluent_header(schema_id))
    n = len(single)
    directory = tempfile.mkdtemp(prefix="bench-registry-")
    ch = connect(f"chdb://{directory}")
    migrate(ch, "audit")
    codec = RegistryCodec(sr, shipped)
    counter = prometheus_client.Counter("f", "", registry=prometheus_client.CollectorRegistry())
    with tuned_gc():
        for in_clickhouse in (True, False):
            s = WorkerSettings(
                clickhouse_url=f"chdb://{directory}",
                database="audit",
                parse_in_clickhouse=in_clickhouse,
            )
            best = {"single-object": float("inf"), "confluent": float("inf")}
            for _ in range(args.rounds):
                for name, batch in (("single-object", single), ("confluent", confluent)):
                    checker = BatchChecker.for_settings(s, ch, codec, KeyRing(), counter)
                    gc.collect()
                    started = time.perf_counter()
                    prepared = checker.prepare(batch)
                    best[name] = min(best[name], time.perf_counter() - started)
                    assert prepared.inserted == n, prepared.rejected[:1]
            path = "clickhouse" if in_clickhouse else "python"
            for name, seconds in best.items():
                print(
                    f"{path:10s} {name:13s} {seconds / n * 1e6:6.2f} µs/event "
                    f"({n / seconds:,.0f} events/s)"
                )


if __name__ == "__main__":
    main()
