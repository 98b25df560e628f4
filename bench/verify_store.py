"""Building a large signed store for the verify benchmarks, fast.

Events are exactly what an ``AuditProducer`` sends (the realistic 20-feature decision,
hash-chained, signed checkpoints every ``checkpoint_every`` events and at each chain's end),
but they are written into ``decisions`` and ``checkpoints`` directly, column-oriented, instead
of through a broker and the worker (whose checks would only repeat here what the events
already satisfy). Chains are filled round-robin, so every insert block holds every chain.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from bench.common import make_calls
from decision_audit.contract import chain_hash, default_codec, genesis_hash, uuid7
from decision_audit.contract.checkpoint import ALGORITHM, checkpoint_message
from decision_audit.contract.fields import CHECKPOINT, DECISION_EVENT
from decision_audit.producer.signing import Signer

BLOCK = 50_000
_START = datetime(2026, 1, 5, tzinfo=UTC)


def build_store(
    client: Any,
    database: str,
    *,
    events: int,
    chains: int,
    signer: Signer,
    checkpoint_every: int = 1000,
    start: datetime = _START,
    run: str | None = None,
) -> list[tuple[str, int]]:
    """Store ``events`` decisions spread over ``chains`` chains; returns the chains."""
    codec = default_codec()
    schema = codec.registry.latest("decision_event")
    pool = make_calls(4096, seed=17)
    inputs = [json.dumps(c.inputs, separators=(",", ":")) for c in pool]
    run = run or uuid.uuid4().hex[:8]
    ids = [(f"bench-{run}-{k}", 1_700_000_000_000_000 + k) for k in range(chains)]
    heads = [genesis_hash(p, e) for p, e in ids]
    seqs = [0] * chains
    per_chain = -(-events // chains)
    names = DECISION_EVENT.names
    rows: list[tuple[Any, ...]] = []
    checkpoints: list[list[Any]] = []
    fp = schema.fingerprint_int
    for i in range(events):
        k = i % chains
        pid, epoch = ids[k]
        c = pool[i % len(pool)]
        seqs[k] += 1
        seq = seqs[k]
        rec = {
            "event_id": str(uuid7()),
            "occurred_at": start + timedelta(milliseconds=i),
            "model_name": c.model_name,
            "model_version": c.model_version,
            "deployment_id": c.deployment_id,
            "request_id": c.request_id,
            "inputs": inputs[i % len(pool)],
            "prediction": c.prediction,
            "prediction_is_json": False,
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
            "producer_id": pid,
            "producer_epoch": epoch,
            "seq": seq,
            "prev_hash": heads[k],
        }
        body = codec.encode_body(schema, rec)
        heads[k] = h = chain_hash(heads[k], body)
        rows.append((*(rec[n] for n in names), h, fp, codec.frame(schema, body), 0, i))
        last = seq == per_chain or i >= events - chains
        if seq % checkpoint_every == 0 or last:
            checkpoints.append(
                [
                    pid,
                    epoch,
                    seq,
                    h,
                    signer.key_id,
                    ALGORITHM,
                    signer.sign(checkpoint_message(pid, epoch, seq, h)),
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
    return ids


def _insert(client: Any, database: str, rows: list[tuple[Any, ...]]) -> None:
    if rows:
        client.insert(
            f"{database}.decisions",
            list(zip(*rows, strict=True)),
            column_names=list(DECISION_EVENT.written),
            column_oriented=True,
            settings={"async_insert": 0},
        )
