"""One stored row against its original bytes (decision_audit.audit.row_check): what the
bytes say of a row's hash, seq and compared columns, and of a checkpoint's signature."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from decision_audit.audit.row_check import (
    Signature,
    StoredCheckpoint,
    check_signature,
    row_integrity,
)
from decision_audit.contract import default_codec
from decision_audit.contract.checkpoint import checkpoint_message
from decision_audit.contract.fields import DECISION_EVENT
from decision_audit.contract.keys import KeyRing
from decision_audit.producer.signing import Signer, generate_keypair
from tests.helpers import craft_chain


def _stored(seq: int = 2) -> dict[str, Any]:
    """The stored row of event ``seq`` of a crafted chain, columns as the bytes say."""
    codec = default_codec()
    raw, h = craft_chain("p", seq)[-1]
    rec = codec.decode(raw).record
    return {**{c: rec[c] for c in DECISION_EVENT.compared}, "seq": seq, "raw": raw, "event_hash": h}


def test_an_untouched_row_holds() -> None:
    row = _stored()
    check = row_integrity(default_codec(), DECISION_EVENT.compared, row)
    assert check.decoded is not None and check.decoded.record["seq"] == 2
    assert check.hash_ok and check.seq_ok and check.columns_ok and check.changed == ()
    assert check.event_hash == row["event_hash"]


def test_changed_columns_seq_and_hash_are_named() -> None:
    stored = _stored()
    row = {**stored, "model_version": "9", "score": -1.0, "seq": 7, "event_hash": bytes(32)}
    check = row_integrity(default_codec(), DECISION_EVENT.compared, row)
    assert check.changed == ("model_version", "score")  # in compared order
    assert not check.seq_ok and not check.columns_ok and not check.hash_ok
    # The recomputed hash is the bytes' own, whatever the stored one says.
    assert check.event_hash == stored["event_hash"]
    # Only the columns asked about are compared.
    assert row_integrity(default_codec(), (), row).changed == ()


def test_bytes_that_do_not_decode() -> None:
    row = {**_stored(), "raw": b"\x00\x01junk"}
    check = row_integrity(default_codec(), DECISION_EVENT.compared, row)
    assert check.decoded is None and check.error
    assert not check.hash_ok and not check.columns_ok and check.event_hash == b""


def test_checkpoint_signature(tmp_path: Path) -> None:
    generate_keypair(tmp_path, "worker-a")
    signer, keyring = Signer(tmp_path / "worker-a.key"), KeyRing.load(tmp_path)
    head = bytes(range(32))
    signature = signer.sign(checkpoint_message("p", 1, 5, head))
    assert check_signature(keyring, "p", 1, 5, head, "worker-a", signature) is Signature.VALID
    assert check_signature(keyring, "p", 1, 6, head, "worker-a", signature) is Signature.FORGED
    assert check_signature(keyring, "p", 1, 5, head, "other", signature) is Signature.UNKNOWN_KEY

    cp = StoredCheckpoint("p", 1, 5, head, "worker-a", signature, verified_by_worker=False)
    assert cp.holds(keyring) is True
    forged = StoredCheckpoint("p", 1, 5, bytes(32), "worker-a", signature, True)
    assert forged.holds(keyring) is False
    # Without keys: as the worker checked it, None when it did not.
    assert forged.holds(KeyRing()) is True
    assert cp.holds(KeyRing()) is None
