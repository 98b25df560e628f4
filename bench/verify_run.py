"""The verification half of the integrity benchmark, in its own process (one chDB dir each).

``python -m bench.verify_run --events N --chdb DIR`` builds N realistic signed events on
eight chains (exactly the bytes an ``AuditProducer`` sends, checkpoints every 1,000 events),
then times, each beside its baseline:

* the worker's checks — ``EventVerifier.check`` (decode, SHA-256 chain hash, field and
  signature checks) plus ``ChainTracker.accept`` — against decoding alone; and the same
  checks on the worker's default path, where ClickHouse parses and checks the events
  (``Stager.screen`` + ``stage``, see decision_audit.worker.staging);
* ``decision-audit verify`` (``TrailVerifier.run``, its per-event work in the engine) over
  the stored rows against streaming the same rows out of ClickHouse and doing nothing with
  them, and against the same checks event by event in Python (``engine=False``,
  ``verify_python_ev_s``; ``bench.verify_scale`` measures verify at scale).

Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bench.common import make_calls
from decision_audit.audit.verify import COMPARED, TrailVerifier
from decision_audit.clickhouse.connect import connect
from decision_audit.clickhouse.migrate import migrate
from decision_audit.contract import chain_hash, default_codec, genesis_hash, uuid7
from decision_audit.contract.checkpoint import ALGORITHM, checkpoint_message
from decision_audit.contract.keys import KeyRing
from decision_audit.contract.models import utc_now
from decision_audit.producer.signing import Signer, generate_keypair
from decision_audit.worker.chains import ChainTracker, Outcome
from decision_audit.worker.checks import (
    EVENT_HASH_HEADER,
    EventVerifier,
    Rejection,
    VerifiedCheckpoint,
)
from decision_audit.worker.rows import checkpoint_row
from decision_audit.worker.staging import Stager
from decision_audit.worker.store import DecisionColumns, Store

DB = "audit"
CHAINS = 8
CHECKPOINT_EVERY = 1000
Message = tuple[bytes, bytes, list[tuple[str, str | bytes | None]] | None]


def build(events: int, signer: Signer) -> list[Message]:
    """``(value, key, headers)`` of ``events`` decisions and their checkpoints, interleaved."""
    codec = default_codec()
    schema = codec.registry.latest("decision_event")
    cp_schema = codec.registry.latest("checkpoint")
    pool = make_calls(4096, seed=17)
    run = uuid.uuid4().hex[:8]
    chains = [(f"bench-verify-{run}-{k}", 1_700_000_000_000_000 + k) for k in range(CHAINS)]
    heads = [genesis_hash(p, e) for p, e in chains]
    seqs = [0] * CHAINS
    out: list[Message] = []
    for i in range(events):
        k = i % CHAINS
        pid, epoch = chains[k]
        c = pool[i % len(pool)]
        seqs[k] += 1
        rec = {
            "event_id": str(uuid7()),
            "occurred_at": utc_now(),
            "model_name": c.model_name,
            "model_version": c.model_version,
            "deployment_id": c.deployment_id,
            "request_id": c.request_id,
            "inputs": json.dumps(c.inputs, separators=(",", ":")),
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
            "seq": seqs[k],
            "prev_hash": heads[k],
        }
        body = codec.encode_body(schema, rec)
        heads[k] = chain_hash(heads[k], body)
        out.append((codec.frame(schema, body), pid.encode(), [(EVENT_HASH_HEADER, heads[k])]))
        if seqs[k] % CHECKPOINT_EVERY == 0 or i >= events - CHAINS:
            signature = signer.sign(checkpoint_message(pid, epoch, seqs[k], heads[k]))
            cp = {
                "producer_id": pid,
                "producer_epoch": epoch,
                "seq": seqs[k],
                "chain_head": heads[k],
                "key_id": signer.key_id,
                "algorithm": ALGORITHM,
                "signature": signature,
                "signed_at": utc_now(),
            }
            out.append((codec.encode(cp_schema, cp), pid.encode(), None))
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.verify_run")
    p.add_argument("--events", type=int, required=True)
    p.add_argument("--chdb", required=True, help="a fresh chDB directory")
    a = p.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        generate_keypair(tmp, "bench")
        signer = Signer(Path(tmp) / "bench.key")
        keyring = KeyRing.load(tmp)
        messages = build(a.events, signer)
        codec = default_codec()

        t = time.perf_counter()
        for value, _, _ in messages:
            codec.decode(value)
        decode_s = time.perf_counter() - t

        verifier = EventVerifier(codec, max_event_bytes=1_000_000, keyring=keyring)
        tracker = ChainTracker(lambda chains: {})
        checked: list[Any] = []
        t = time.perf_counter()
        for value, key, headers in messages:
            result = verifier.check(value, key, headers)
            if isinstance(result, Rejection):
                raise SystemExit(f"bench event rejected: {result}")
            rec = result.record
            chain = (rec["producer_id"], rec["producer_epoch"])
            tracker.prepare((chain,))
            if not isinstance(result, VerifiedCheckpoint):
                verdict = tracker.accept(chain, rec["seq"], rec["prev_hash"], result.event_hash)
                if verdict.outcome is not Outcome.NEW:
                    raise SystemExit(f"bench event judged {verdict}")
            checked.append(result)
        check_s = time.perf_counter() - t
        tracker.commit()

        client = connect(f"chdb://{a.chdb}")
        migrate(client, DB)

        # The worker's default path: ClickHouse parses and checks the events (staging.py).
        stager = Stager(
            client,
            codec.registry,
            max_event_bytes=1_000_000,
            keyring=keyring,
            require_signed=False,
        )
        staged_tracker = ChainTracker(lambda chains: {})
        t = time.perf_counter()
        for offset, (value, key, headers) in enumerate(messages):
            if stager.screen(value, key, headers, 0, offset) is None:
                result = verifier.check(value, key, headers)  # checkpoints
                if not isinstance(result, VerifiedCheckpoint):
                    raise SystemExit(f"bench event not staged: {result}")
        flagged = stager.stage()
        for ev in stager.events:
            rec = ev.record
            chain = (rec["producer_id"], rec["producer_epoch"])
            staged_tracker.prepare((chain,))
            verdict = staged_tracker.accept(chain, rec["seq"], rec["prev_hash"], ev.event_hash)
            if verdict.outcome is not Outcome.NEW:
                raise SystemExit(f"bench event judged {verdict}")
        staged_s = time.perf_counter() - t
        if flagged or len(stager) != a.events:
            raise SystemExit(f"staged {len(stager)} of {a.events}, flagged {flagged}")
        store = Store(client, DB)
        batch, checkpoints = DecisionColumns(), []
        for offset, (result, (value, _, _)) in enumerate(zip(checked, messages, strict=True)):
            if isinstance(result, VerifiedCheckpoint):
                checkpoints.append(checkpoint_row(result, value, 0, offset))
            else:
                batch.append(result, value, 0, offset)
            if len(batch) >= 50_000:
                store.insert_decisions(batch, f"bench-{offset}")
                batch = DecisionColumns()
        store.insert_decisions(batch, "bench-last")
        store.insert_checkpoints(checkpoints, "bench")
        client.command(f"OPTIMIZE TABLE {DB}.decisions FINAL")

        # Baseline: stream the same columns, in the same order, and do nothing with them.
        cols = ", ".join(("seq", "toString(event_id) AS eid", "event_hash", "raw", *COMPARED[1:]))
        t = time.perf_counter()
        scanned = 0
        with client.query_row_block_stream(
            f"SELECT {cols} FROM {DB}.decisions FINAL "
            "ORDER BY producer_id, producer_epoch, seq, eid",
            column_formats={"event_hash": "bytes", "raw": "bytes", "prev_hash": "bytes"},
        ) as stream:
            for block in stream:
                scanned += len(block)
        scan_s = time.perf_counter() - t

        t = time.perf_counter()
        report = TrailVerifier(client, DB, keyring).run(record=False)
        verify_s = time.perf_counter() - t
        t = time.perf_counter()
        in_python = TrailVerifier(client, DB, keyring, engine=False).run(record=False)
        python_s = time.perf_counter() - t
        if in_python.to_dict() != report.to_dict():
            raise SystemExit("verify in the engine and in Python disagree")
        if not report.ok or report.events != a.events or scanned != a.events:
            raise SystemExit(
                f"verify did not check out: ok={report.ok} events={report.events} "
                f"scanned={scanned} of {a.events}: {report.to_dict()}"
            )
    events = a.events
    print(
        json.dumps(
            {
                "events": events,
                "checkpoints": len(checkpoints),
                "decode_ev_s": len(messages) / decode_s,
                "worker_check_ev_s": len(messages) / check_s,
                "worker_staged_check_ev_s": len(messages) / staged_s,
                "scan_ev_s": events / scan_s,
                "verify_ev_s": events / verify_s,
                "verify_python_ev_s": events / python_s,
                "attested": sum(c.attested_to or 0 for c in report.chains),
            }
        ),
        flush=True,
    )
    os._exit(0)


if __name__ == "__main__":
    main()
