"""Finding a decision's encrypted inputs and putting opened values back (audit/keystore.py)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from decision_audit.audit.keystore import _replace, encrypted_inputs, find_encrypted

ENC = {"$enc": "aes-256-gcm", "kid": "k", "sub": "ab" * 32, "iv": "x", "ct": "y"}


def test_encrypted_values_are_found_by_path_in_objects_and_arrays() -> None:
    inputs = {"a": {"name": ENC, "n": 1}, "xs": [{"e": ENC}, {"e": 2}], "top": ENC}
    assert [p for p, _ in find_encrypted(inputs)] == ["a.name", "xs.0.e", "top"]
    for path in ("a.name", "xs.0.e", "top"):
        _replace(inputs, path, "opened")
    assert inputs == {
        "a": {"name": "opened", "n": 1},
        "xs": [{"e": "opened"}, {"e": 2}],
        "top": "opened",
    }


def test_a_decision_without_encrypted_inputs_costs_no_query() -> None:
    row = {"event_id": "e", "occurred_at": datetime.now(UTC), "inputs": json.dumps({"a": 1})}
    assert encrypted_inputs(None, "audit", row) == []  # the client is never touched
