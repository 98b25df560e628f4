"""Producer memory under a backlog, in its own process so nothing else moves its RSS.

``python -m bench.backlog_run --mode ours|bare --events N`` points a producer at a loopback
port where no broker listens, so every event stays queued in librdkafka (a real backlog, as
during a broker outage), logs N events and prints the RSS growth as one JSON line. Both modes
get ``queue.buffering.max.messages`` raised above N so nothing is refused.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import time
import uuid

from bench.common import current_rss_bytes, log_call, make_calls
from decision_audit import AuditProducer, ProducerSettings
from decision_audit.devtools.tansu_broker import free_port

WARMUP = 500


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.backlog_run")
    p.add_argument("--mode", choices=("ours", "bare"), required=True)
    p.add_argument("--events", type=int, required=True)
    a = p.parse_args(argv)
    # The unreachable broker makes librdkafka complain continuously; that is expected here.
    logging.disable(logging.CRITICAL)

    bootstrap = f"127.0.0.1:{free_port()}"  # nothing listens there
    pool = make_calls(4096, seed=13)
    producer_id = f"bench-backlog-{uuid.uuid4().hex[:8]}"
    max_messages = a.events + WARMUP + 10_000
    if a.mode == "ours":
        ours = AuditProducer(
            bootstrap,
            producer_id=producer_id,
            topic="bench-backlog",
            queue_buffering_max_messages=max_messages,
        )

        def log(i: int) -> None:
            log_call(ours, pool[i % 4096])

    else:
        from confluent_kafka import Producer

        conf = ProducerSettings(bootstrap_servers=bootstrap, producer_id=producer_id).kafka_config()
        conf["queue.buffering.max.messages"] = max_messages
        conf["logger"] = logging.getLogger("bench.kafka")
        bare = Producer(conf)
        events = [c.as_json_event() for c in pool]

        def log(i: int) -> None:
            ev = events[i % 4096]
            ev["ts"] = time.time()
            bare.produce("bench-backlog", json.dumps(ev))

    for i in range(WARMUP):
        log(i)
    gc.collect()
    time.sleep(0.2)
    before = current_rss_bytes()
    for i in range(a.events):
        log(i)
    gc.collect()
    time.sleep(0.2)
    after = current_rss_bytes()
    out = {
        "mode": a.mode,
        "events": a.events,
        "rss_before_bytes": before,
        "rss_after_bytes": after,
        "growth_bytes": after - before,
    }
    if a.mode == "ours":
        out["queued"] = ours.stats.logged
        out["dropped"] = ours.stats.dropped
        out["delivered"] = ours.stats.delivered
    print(json.dumps(out), flush=True)
    # The broker is unreachable: skip the flush/close that would wait for it.
    os._exit(0)


if __name__ == "__main__":
    main()
