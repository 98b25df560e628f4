"""The engine's query, built without an engine: what it encodes, what it leaves to Python."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from decision_audit.audit import avro_sql, engine_walk
from decision_audit.audit.avro_sql import Unsupported, body_sql, defaults_sql, long_sql, varint
from decision_audit.audit.chain_walk import ChainRow
from decision_audit.audit.engine_walk import EngineWalk, bound_parameters
from decision_audit.contract.schemas import shipped_schemas


def _writer(version: int) -> Any:
    return shipped_schemas().get("decision_event", version).definition


def test_every_shipped_decision_writer_is_encoded_in_sql() -> None:
    latest = shipped_schemas().latest("decision_event").definition
    for version in (1, 2, 3, 4):
        body, guards = body_sql(_writer(version))
        assert body.startswith("concat(") and guards
        defaults = defaults_sql(_writer(version), latest)
        assert len(defaults) == len(latest["fields"]) - len(_writer(version)["fields"])
    assert defaults_sql(_writer(1), latest) == [
        "status = 'ok'",
        "isNull(error_type)",
        "isNull(error_message)",
        "isNull(code_commit)",
        "isNull(environment_hash)",
        "isNull(redaction_policy)",
        "isNull(key_id)",
    ]


def test_what_the_sql_cannot_encode_is_named() -> None:
    base = {"type": "record", "name": "x", "fields": []}
    for field in (
        {"name": "seq", "type": "int"},
        {"name": "tags", "type": {"type": "array", "items": "string"}},
        {"name": "score", "type": ["null", "double", "string"]},
        {"name": "not_stored", "type": "string"},
    ):
        with pytest.raises(Unsupported):
            body_sql({**base, "fields": [field]})
    reader = {**base, "fields": [{"name": "actor", "type": ["null", "string"], "default": None}]}
    with pytest.raises(Unsupported):
        defaults_sql(base, {**base, "fields": [{"name": "actor", "type": "string"}]})
    assert defaults_sql(base, reader) == ["isNull(actor)"]


def test_a_long_names_its_zigzag_once_and_never_shifts_by_64() -> None:
    sql = long_sql("seq", "_z_seq")
    assert sql.count(" AS _z_seq)") == 1 and sql.count("_z_seq") > 20
    shifts = [int(n) for n in re.findall(r"bitShiftRight\([^,]+, (\d+)\)", varint("z"))]
    assert max(shifts) == 63
    # Lengths and counts: three bytes at most, guarded below 1 MiB.
    body, guards = body_sql(_writer(3))
    assert f"length(inputs) < {avro_sql.MAX_SMALL}" in guards
    assert len(body) < 20_000


def test_the_query_reads_with_final_unless_told_and_encodes_only_present_writers() -> None:
    walk = EngineWalk(None, "audit")
    full = walk.sql("1", checkpoints=True, bounded=False)
    assert "audit.decisions FINAL" in full and "_key" not in full
    assert "IN (SELECT producer_id, producer_epoch, seq FROM audit.checkpoints)" in full
    incremental = walk.sql("1", checkpoints=False, bounded=True, final=False)
    assert "audit.decisions\n" in incremental and "uniqExact(_key)" in incremental
    assert "{bound_keys:Array(String)}" in incremental
    latest = shipped_schemas().latest("decision_event")
    only = walk.sql("1", checkpoints=False, bounded=False, writers={latest.fingerprint_int})
    assert only.count("_hdr = unhex(") == 1 and full.count("_hdr = unhex(") == 4  # v1..v4
    none = walk.sql("1", checkpoints=False, bounded=False, writers=set())
    assert "false AS enc_ok" in none


def test_bounds_key_chains_by_epoch_first() -> None:
    params = bound_parameters({("a:1", 2): 5, ("b", 10): 7})
    assert params == {"bound_keys": ["2:a:1", "10:b"], "bound_seqs": [5, 7]}


def _row(irregular: int = 0, interesting: int = 1) -> tuple[Any, ...]:
    eid = uuid.uuid4()
    h = b"\x01" * 32
    found = [(1, eid, b"\x00" * 32, h, 1, False, 0, uuid.UUID(int=0), b"\x00" * 32)]
    latest = datetime(2026, 1, 1, tzinfo=UTC)
    top = (1, eid, b"\x00" * 32, h)
    cps = [(1000, uuid.uuid4(), h)]
    return ("p", 3, 1, 1, 1, "k", latest, top, irregular, interesting, found, len(cps), cps)


def test_a_chain_is_judged_exactly_only_when_nothing_was_left_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    chain = engine_walk._chain(_row())
    assert chain.exact and (chain.producer_id, chain.producer_epoch) == ("p", 3)
    assert chain.interesting[0].prev is None and chain.interesting[0].hash_ok
    assert chain.last == ChainRow(1, chain.interesting[0].row.event_id, b"\x00" * 32, b"\x01" * 32)
    assert [i.linked for i in chain.interesting] == [True, False]
    assert chain.interesting[1].row.seq == 1000 and chain.interesting[1].prev is None
    assert not engine_walk._chain(_row(irregular=1)).exact
    monkeypatch.setattr(engine_walk, "MAX_INTERESTING", 0)
    assert not engine_walk._chain(_row()).exact
    monkeypatch.undo()
    # the events at a checkpoint's seq come back apart, under a cap of their own
    monkeypatch.setattr(engine_walk, "MAX_CHECKPOINT_EVENTS", 1)
    assert engine_walk._chain(_row()).exact
    monkeypatch.setattr(engine_walk, "MAX_CHECKPOINT_EVENTS", 0)
    assert not engine_walk._chain(_row()).exact
