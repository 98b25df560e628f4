"""``decision-audit demo``: the whole pipeline on the embedded stack, in one process."""

from __future__ import annotations

import json
import random
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from confluent_kafka import Producer
from rich.console import Console
from rich.panel import Panel
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from decision_audit import AuditProducer
from decision_audit.audit.output import render
from decision_audit.audit.verify import TrailVerifier
from decision_audit.audit.verify_report import TrailReport, print_report
from decision_audit.clickhouse.connect import connect
from decision_audit.clickhouse.migrate import migrate
from decision_audit.contract.keys import KeyRing
from decision_audit.devtools.tansu_broker import LocalBroker
from decision_audit.producer.signing import generate_keypair
from decision_audit.worker.loop import Worker
from decision_audit.worker.settings import WorkerSettings
from decision_audit.worker.topics import ensure_topics

KEY_ID = "demo-serving"

MODELS = (
    ("credit-risk", "2.3.0", ("approve", "review", "decline")),
    ("fraud-detector", "1.4.2", ("legit", "fraud")),
    ("churn-predictor", "0.9.1", ("stay", "churn")),
)
REGIONS = ("eu-west", "us-east", "ap-south")


def _features(rng: random.Random) -> dict[str, Any]:
    """About twenty features of mixed types, as a tabular model would see them."""
    return {
        "age": rng.randint(18, 90),
        "income": round(rng.lognormvariate(10.5, 0.6), 2),
        "debt_ratio": round(rng.random(), 4),
        "accounts_open": rng.randint(0, 12),
        "late_payments_12m": rng.randint(0, 5),
        "employment_years": round(rng.uniform(0, 40), 1),
        "region": rng.choice(REGIONS),
        "channel": rng.choice(("web", "app", "branch")),
        "device": rng.choice(("ios", "android", "desktop")),
        "country": rng.choice(("DE", "FR", "US", "IN", "BR")),
        "credit_utilization": round(rng.random(), 3),
        "num_inquiries": rng.randint(0, 9),
        "has_mortgage": rng.random() < 0.4,
        "tenure_months": rng.randint(0, 240),
        "avg_balance": round(rng.uniform(-500, 25_000), 2),
        "txn_count_30d": rng.randint(0, 300),
        "merchant_category": rng.choice(("grocery", "travel", "electronics", "fuel")),
        "is_new_customer": rng.random() < 0.1,
        "segment": rng.choice(("retail", "premium", "smb")),
        "notes": None,
    }


def _serve(producer: AuditProducer, count: int, seed: int, done: list[int]) -> None:
    rng = random.Random(seed)
    for i in range(count):
        name, version, labels = rng.choice(MODELS)
        score = rng.random()
        producer.log_decision(
            name,
            version,
            _features(rng),
            labels[min(int(score * len(labels)), len(labels) - 1)],
            score=round(score, 4),
            request_id=f"req-{seed}-{i}",
            deployment_id=f"{name}-prod-{rng.choice(REGIONS)}",
            run_id=f"run-{version}",
            dataset_version=f"ds-{name}-2026-10",
            actor="svc:scoring-api",
            latency_ms=round(rng.lognormvariate(1.5, 0.5), 3),
            tags={"env": "demo"},
        )
        done[0] += 1


def run_demo(*, events: int, producers: int, data_dir: Path, console: Console) -> None:
    """Log ``events`` decisions from ``producers`` serving processes, store and report them."""
    run = uuid.uuid4().hex[:8]
    data_dir = data_dir.resolve()
    keys = data_dir.parent / f"{data_dir.name}-keys"
    if not (keys / f"{KEY_ID}.key").exists():
        generate_keypair(keys, KEY_ID)
    started = time.monotonic()
    with LocalBroker() as broker:
        console.print(f"[bold]broker[/] Tansu on {broker.bootstrap_servers} (in memory)")
        settings = WorkerSettings(
            bootstrap_servers=broker.bootstrap_servers,
            clickhouse_url=f"chdb://{data_dir}",
            group=f"demo-{run}",
            flush_interval=0.5,
            session_timeout_ms=2000,
            keys=keys,
        )
        ensure_topics(broker.bootstrap_servers, {settings.topic: 4, settings.dlq_topic: 1})
        client = connect(settings.clickhouse_url)
        migrate(client, settings.database)
        console.print(f"[bold]store[/]  chDB at {data_dir}")
        console.print(f"[bold]keys[/]   checkpoints signed with {keys / KEY_ID}.key (Ed25519)")

        worker = Worker(settings, client=client)
        worker_thread = threading.Thread(target=worker.run, name="demo-worker", daemon=True)
        worker_thread.start()

        per = [events // producers + (1 if k < events % producers else 0) for k in range(producers)]
        serving = []
        prods = []
        for k in range(producers):
            p = AuditProducer(
                broker.bootstrap_servers,
                producer_id=f"demo-{run}-serving-{k}",
                signing_key=keys / f"{KEY_ID}.key",
            )
            prods.append(p)
            counter = [0]
            t = threading.Thread(target=_serve, args=(p, per[k], k, counter), daemon=True)
            serving.append((t, counter))
            t.start()
        # One hostile message, to show that bad input is quarantined, not lost or trusted.
        raw = Producer({"bootstrap.servers": broker.bootstrap_servers})
        raw.produce(settings.topic, b"\x00definitely not avro", b"intruder")
        raw.flush(10)
        raw.close()

        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        ) as progress:
            logged_task = progress.add_task("logged ", total=events)
            stored_task = progress.add_task("stored ", total=events)
            deadline = time.monotonic() + max(60.0, events / 500)
            while time.monotonic() < deadline:
                logged = sum(c[0] for _, c in serving)
                progress.update(logged_task, completed=logged)
                progress.update(stored_task, completed=worker.stats.inserted)
                if worker.stats.inserted >= events and worker.stats.quarantined_total >= 1:
                    break
                if not worker_thread.is_alive():
                    break
                time.sleep(0.1)
        for t, _ in serving:
            t.join()
        for p in prods:
            p.close()
        worker.stop()
        worker_thread.join(timeout=30)
    elapsed = time.monotonic() - started
    if worker.stats.inserted < events:
        raise RuntimeError(
            f"only {worker.stats.inserted} of {events} events were stored in {elapsed:.1f}s"
        )
    _report(client, settings.database, run, console, elapsed)
    console.print("\n[bold]Integrity[/] (what `decision-audit verify` checks)")
    trail = TrailVerifier(client, settings.database, KeyRing.load(keys))
    reports = [trail.run(producer=f"demo-{run}-serving-{k}") for k in range(producers)]
    merged = TrailReport(settings.database, True, [c for r in reports for c in r.chains])
    print_report(merged, "text", console)
    console.print(
        Panel.fit(
            "Query it yourself:\n"
            f"  decision-audit query --clickhouse-url chdb://{data_dir} \\\n"
            f'    "SELECT model_name, count() FROM {settings.database}.decisions GROUP BY 1"\n'
            f"  decision-audit verify --clickhouse-url chdb://{data_dir} --keys {keys}",
            title="next",
        )
    )


def _report(client: Any, db: str, run: str, console: Console, elapsed: float) -> None:
    mine = f"producer_id LIKE 'demo-{run}-%'"

    def show(title: str, sql: str, **params: Any) -> list[Any]:
        result = client.query(sql, parameters=params or None)
        render(result.column_names, result.result_rows, "table", console, title=title)
        return list(result.result_rows)

    total = client.query(f"SELECT count() FROM {db}.decisions FINAL WHERE {mine}").result_rows[0][0]
    console.print(
        f"\n[bold green]{total}[/] decisions stored from this run in {elapsed:.1f}s "
        "(counted in ClickHouse, de-duplicated with FINAL)\n"
    )
    show(
        "Decisions per model",
        f"""SELECT model_name, model_version, count() AS decisions,
                   round(avg(score), 3) AS avg_score,
                   round(quantile(0.5)(latency_ms), 2) AS p50_latency_ms,
                   round(quantile(0.99)(latency_ms), 2) AS p99_latency_ms,
                   toString(topK(3)(prediction)) AS top_predictions
            FROM {db}.decisions FINAL WHERE {mine}
            GROUP BY model_name, model_version ORDER BY decisions DESC""",
    )
    show(
        "Most recent decisions",
        f"""SELECT occurred_at, model_name, request_id, prediction, score, producer_id, seq
            FROM {db}.decisions WHERE {mine} ORDER BY occurred_at DESC, seq DESC LIMIT 5""",
    )
    rows = client.query(
        f"SELECT request_id FROM {db}.decisions WHERE {mine} ORDER BY event_id LIMIT 1"
    ).result_rows
    if rows:
        rid = rows[0][0]
        found = client.query(
            f"""SELECT event_id, occurred_at, model_name, model_version, deployment_id,
                       prediction, score, inputs, lower(hex(event_hash)) AS event_hash
                FROM {db}.decisions WHERE request_id = {{rid:String}}""",
            parameters={"rid": rid},
        )
        console.print(f"\n[bold]Lookup by request id[/] {rid}")
        for name, value in zip(found.column_names, found.result_rows[0], strict=True):
            if name == "inputs":
                value = json.dumps(json.loads(value), ensure_ascii=False)[:160] + "…"
            console.print(f"  {name:>14}: {value}")
    show(
        "Quarantined (never trusted, kept with the reason)",
        f"SELECT reason, count() AS messages, any(detail) AS example FROM {db}.quarantine FINAL "
        "GROUP BY reason ORDER BY messages DESC",
    )
