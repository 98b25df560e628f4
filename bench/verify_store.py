"""Building a large signed store for the verify benchmarks, fast.

Events are exactly what an ``AuditProducer`` sends (the realistic 20-feature decision,
hash-chained, signed checkpoints every ``checkpoint_every`` events and at each chain's end),
but they are written into ``decisions`` and ``checkpoints`` directly, column-oriented, instead
of through a broker and the worker (whose checks would only repeat here what the events
already satisfy). Chains are filled round-robin, so every insert block holds every chain.
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from bench.common import make_calls
from decision_audit.contract import chain_hash, default_codec, genesis_hash, uuid7
from decision_audit.contract.checkpoint import ALGORITHM, checkpoint_message
from decision_audit.contract.fields import CHECKPOINT, DECISION_EVENT
from decision_audit.producer.signing import Signer

BLOCK = 50_000
_START = datetime(2026, 1, 5, tzinfo=UTC)


@dataclass
class _Chain:
    producer_id: str
    epoch: int
    seq: int
    head: bytes


def build_store(
    client: Any,
    database: str,
    *,
    events: int,
    chains: int,
    signer: Signer,
    checkpoint_every: int = 1000,
    run: str | None = None,
    unique_requests: bool = False,
    step: timedelta = timedelta(milliseconds=1),
) -> list[tuple[str, int]]:
    """Store ``events`` decisions spread over ``chains`` new chains; returns the chains.

    By default the request ids cycle with the 4,096 decisions drawn and events sit 1 ms
    apart; ``unique_requests`` gives every event a request id of its own and ``step`` spreads
    them in time (the lookup bench: 10M events over four weeks)."""
    run = run or uuid.uuid4().hex[:8]
    state = [_Chain(f"bench-{run}-{k}", 1_700_000_000_000_000 + k, 0, b"") for k in range(chains)]
    for c in state:
        c.head = genesis_hash(c.producer_id, c.epoch)
    _write(client, database, state, events, signer, checkpoint_every, _START, unique_requests, step)
    return [(c.producer_id, c.epoch) for c in state]


def grow_store(
    client: Any, database: str, *, events: int, signer: Signer, checkpoint_every: int = 1000
) -> None:
    """Append ``events`` decisions to the stored chains (round-robin), continuing each."""
    rows = client.query(
        f"SELECT producer_id, producer_epoch, max(seq), argMaxMerge(event_hash) AS head "
        f"FROM {database}.chain_heads WHERE source = 'decisions' "
        "GROUP BY producer_id, producer_epoch ORDER BY producer_id, producer_epoch",
        column_formats={"head": "bytes"},
    ).result_rows
    latest = client.query(f"SELECT max(occurred_at) FROM {database}.decisions").result_rows[0][0]
    state = [_Chain(str(p), int(e), int(s), bytes(h)) for p, e, s, h in rows]
    _write(
        client,
        database,
        state,
        events,
        signer,
        checkpoint_every,
        latest + timedelta(milliseconds=1),
    )


def _write(
    client: Any,
    database: str,
    state: list[_Chain],
    events: int,
    signer: Signer,
    checkpoint_every: int,
    start: datetime,
    unique_requests: bool = False,
    step: timedelta = timedelta(milliseconds=1),
) -> None:
    codec = default_codec()
    schema = codec.registry.latest("decision_event")
    pool = make_calls(4096, seed=17)
    inputs = [json.dumps(c.inputs, separators=(",", ":")) for c in pool]
    names = DECISION_EVENT.names
    fp = schema.fingerprint_int
    n = len(state)
    rows: list[tuple[Any, ...]] = []
    checkpoints: list[list[Any]] = []
    for i in range(events):
        chain = state[i % n]
        c = pool[i % len(pool)]
        chain.seq += 1
        rec = {
            "event_id": str(uuid7()),
            "occurred_at": start + i * step,
            "model_name": c.model_name,
            "model_version": c.model_version,
            "deployment_id": c.deployment_id,
            "request_id": os.urandom(8).hex() if unique_requests else c.request_id,
            "inputs": inputs[i % len(pool)],
            "prediction": c.prediction,
            "prediction_is_json": False,
            "status": "ok",
            "error_type": None,
            "error_message": None,
            "score": c.score,
            "explanation": None,
            "run_id": None,
            "dataset_version": None,
            "code_commit": None,
            "environment_hash": None,
            "actor": None,
            "latency_ms": None,
            "tags": {},
            "redaction_policy": None,
            "key_id": signer.key_id,
            "producer_id": chain.producer_id,
            "producer_epoch": chain.epoch,
            "seq": chain.seq,
            "prev_hash": chain.head,
        }
        body = codec.encode_body(schema, rec)
        chain.head = h = chain_hash(chain.head, body)
        rows.append((*(rec[k] for k in names), h, fp, codec.frame(schema, body), 0, i))
        if chain.seq % checkpoint_every == 0 or i >= events - n:
            checkpoints.append(
                [
                    chain.producer_id,
                    chain.epoch,
                    chain.seq,
                    h,
                    signer.key_id,
                    ALGORITHM,
                    signer.sign(checkpoint_message(chain.producer_id, chain.epoch, chain.seq, h)),
                    rec["occurred_at"],
                    True,
                    b"",
                    0,
                    i,
                ]
            )
        if len(rows) >= BLOCK:
            _insert(client, database, rows)
            rows = []
    _insert(client, database, rows)
    if checkpoints:
        client.insert(
            f"{database}.checkpoints",
            checkpoints,
            column_names=list(CHECKPOINT.written),
            settings={"async_insert": 0},
        )


def _insert(client: Any, database: str, rows: list[tuple[Any, ...]]) -> None:
    if rows:
        client.insert(
            f"{database}.decisions",
            list(zip(*rows, strict=True)),
            column_names=list(DECISION_EVENT.written),
            column_oriented=True,
            settings={"async_insert": 0},
        )
