"""Reading the key store: who may open a decision's encrypted inputs, and what they say.

The key store is the ``subject_keys`` table: each encrypted decision's data key, sealed to
the key store's X25519 public key and filed under the keyed hash of its data subject's id
(decision_audit.worker.keystore files it; decision_audit.contract.sealing is the format).
A row is useless without the key store's private key, which only authorised auditors hold
(``--keystore-key``): the worker, the filer and ClickHouse never see it. Opening happens in
the auditor's process, and what it opens is printed to the auditor, never logged.

:func:`encrypted_inputs` is what ``trace`` shows of a decision's encrypted fields: opened
(with the key), sealed (key on file), erased (on what date, by whom, why) or without a key.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from decision_audit.contract.errors import DecisionAuditError
from decision_audit.contract.sealing import (
    EncryptedValue,
    SealedKey,
    SealingError,
    UnsealFailed,
    is_encrypted,
    load_keystore_private_key,
    open_sealed_key,
    raw_public,
)

__all__ = [
    "EncryptedInput",
    "ErasedInputs",
    "Erasure",
    "KeystoreKey",
    "NoDecision",
    "NoKeyOnFile",
    "WrongKeystoreKey",
    "decrypt_inputs",
    "encrypted_inputs",
    "erasure_covering",
    "print_encrypted",
    "sealed_key_of",
]


class WrongKeystoreKey(DecisionAuditError, RuntimeError):
    """The key store key given does not open the keys in the store."""


class ErasedInputs(DecisionAuditError, LookupError):
    """The decision's encrypted inputs were erased: nobody can read them any more."""


class NoKeyOnFile(DecisionAuditError, LookupError):
    """The key store has no key for the decision (not filed yet, or never sent)."""


class NoDecision(DecisionAuditError, LookupError):
    """No decision has that event id."""


class KeystoreKey:
    """The key store's private key (``KEY_ID.key`` from ``decision-audit keystore keygen``)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.key_id, self._key = load_keystore_private_key(self.path)
        self.public_raw = raw_public(self._key.public_key())

    def open(self, sealed: SealedKey) -> bytes:
        """An event's data key; :class:`WrongKeystoreKey` when this key does not open it."""
        if sealed.keystore_key_id != self.key_id:
            raise WrongKeystoreKey(
                f"the key of event {sealed.event_id} is sealed to key store key "
                f"{sealed.keystore_key_id!r}; --keystore-key {self.path} is {self.key_id!r}: "
                "pass that key store's own KEY_ID.key"
            )
        try:
            return open_sealed_key(self._key, sealed)
        except UnsealFailed:
            raise WrongKeystoreKey(
                f"--keystore-key {self.path} does not open the key of event {sealed.event_id} "
                f"(sealed to {sealed.keystore_key_id!r}): it is another key with the same id, "
                "or the key store row was altered; pass the key store's own KEY_ID.key"
            ) from None


@dataclass(frozen=True)
class Erasure:
    """One ``erasures`` row."""

    erasure_id: str
    erased_at: datetime
    subject_hash: str
    actor: str
    reason: str
    records: int

    def describe(self) -> str:
        return f"erased on {self.erased_at.isoformat()} by {self.actor} ({self.reason})"


ERASURE_COLUMNS = "toString(erasure_id), erased_at, subject_hash, actor, reason, records"


def erasure_from_row(row: tuple[Any, ...]) -> Erasure:
    eid, at, sub, actor, reason, records = row
    return Erasure(str(eid), at, str(sub), str(actor), str(reason), int(records))


def erasure_covering(client: Any, database: str, sub: str, occurred_at: datetime) -> Erasure | None:
    """The first erasure of subject ``sub`` made after a decision at ``occurred_at``."""
    rows = client.query(
        f"SELECT {ERASURE_COLUMNS} FROM {database}.erasures "
        "WHERE subject_hash = {s:String} AND erased_at >= {t:DateTime64(3, 'UTC')} "
        "ORDER BY erased_at LIMIT 1",
        parameters={"s": sub, "t": occurred_at},
    ).result_rows
    return erasure_from_row(rows[0]) if rows else None


def sealed_key_of(client: Any, database: str, event_id: str, sub: str) -> SealedKey | None:
    """The sealed data key of one decision, if the key store has it."""
    rows = client.query(
        "SELECT keystore_key_id, ephemeral_key, nonce, sealed_key "
        f"FROM {database}.subject_keys FINAL "
        "WHERE subject_hash = {s:String} AND event_id = {e:UUID} LIMIT 1",
        parameters={"s": sub, "e": event_id},
        column_formats={"ephemeral_key": "bytes", "nonce": "bytes", "sealed_key": "bytes"},
    ).result_rows
    if not rows:
        return None
    kid, eph, nonce, sealed = rows[0]
    return SealedKey(event_id, sub, str(kid), bytes(eph), bytes(nonce), bytes(sealed))


@dataclass
class EncryptedInput:
    """One encrypted input field of a decision, as ``trace`` shows it."""

    path: str
    status: str
    """``decrypted``, ``sealed`` (key on file, no --keystore-key), ``erased``, ``no key``"""
    detail: str
    value: Any = None
    """the opened value (``decrypted`` only)"""


def find_encrypted(value: Any, path: str = "") -> list[tuple[str, Any]]:
    """``(path, encrypted object)`` of every encrypted value in a decision's inputs."""
    if is_encrypted(value):
        return [(path, value)]
    out: list[tuple[str, Any]] = []
    if isinstance(value, dict):
        for k, v in value.items():
            out += find_encrypted(v, f"{path}.{k}" if path else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += find_encrypted(v, f"{path}.{i}" if path else str(i))
    return out


def encrypted_inputs(
    client: Any, database: str, decision: dict[str, Any], key: KeystoreKey | None = None
) -> list[EncryptedInput]:
    """What can be said of each encrypted input of ``decision`` (a row with ``event_id``,
    ``occurred_at`` and ``inputs``); opened with ``key`` when the store still has its key."""
    inputs = decision.get("inputs")
    if not isinstance(inputs, str) or '"$enc"' not in inputs:
        return []  # the common case costs no query
    event_id = str(decision["event_id"])
    found = find_encrypted(json.loads(inputs))
    out: list[EncryptedInput] = []
    opened: dict[str, bytes | Erasure | str] = {}
    for path, obj in found:
        try:
            enc = EncryptedValue.parse(obj)
        except SealingError as exc:
            out.append(EncryptedInput(path, "unreadable", str(exc)))
            continue
        state = opened.get(enc.sub)
        if state is None:
            state = opened[enc.sub] = _key_state(
                client, database, event_id, enc.sub, decision["occurred_at"], key
            )
        if isinstance(state, Erasure):
            out.append(EncryptedInput(path, "erased", state.describe()))
        elif isinstance(state, str):
            out.append(EncryptedInput(path, state, _STATE_DETAIL[state]))
        else:
            value = enc.decrypt(state, event_id)
            out.append(EncryptedInput(path, "decrypted", "opened with the key store key", value))
    return out


_STATE_DETAIL = {
    "sealed": "key on file; pass --keystore-key to read it",
    "no key": "no key on file (not filed yet: is `decision-audit keystore file` running?)",
}


def _key_state(
    client: Any,
    database: str,
    event_id: str,
    sub: str,
    occurred_at: datetime,
    key: KeystoreKey | None,
) -> bytes | Erasure | str:
    erasure = erasure_covering(client, database, sub, occurred_at)
    if erasure is not None:
        return erasure  # even if a key row survived a failed erase: nobody reads it
    sealed = sealed_key_of(client, database, event_id, sub)
    if sealed is None:
        return "no key"
    if key is None:
        return "sealed"
    return key.open(sealed)


def decrypt_inputs(
    client: Any, database: str, event_id: str, key: KeystoreKey
) -> tuple[dict[str, Any], list[EncryptedInput]]:
    """A decision's inputs with its encrypted values opened, and what each field was."""
    try:
        eid = str(uuid.UUID(event_id))
    except ValueError:
        raise NoDecision(f"{event_id!r} is not an event id (a UUID)") from None
    rows = client.query(
        f"SELECT toString(event_id), occurred_at, inputs FROM {database}.decisions FINAL "
        "WHERE event_id = {e:UUID} LIMIT 1",
        parameters={"e": eid},
    ).result_rows
    if not rows:
        raise NoDecision(f"no decision has event id {eid} in {database}.decisions")
    _, occurred_at, inputs = rows[0]
    fields = encrypted_inputs(
        client, database, {"event_id": eid, "occurred_at": occurred_at, "inputs": inputs}, key
    )
    value = json.loads(inputs)
    for f in fields:
        if f.status == "erased":
            raise ErasedInputs(f"the encrypted inputs of decision {eid} were {f.detail}")
        if f.status == "no key":
            raise NoKeyOnFile(f"decision {eid}: {f.detail}")
        _replace(value, f.path, f.value)
    return value, fields


def _replace(root: Any, path: str, value: Any) -> None:
    parts = path.split(".")
    node = root
    for p in parts[:-1]:
        node = node[int(p)] if isinstance(node, list) else node[p]
    last = parts[-1]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value


def to_dicts(fields: list[EncryptedInput]) -> list[dict[str, Any]]:
    return [asdict(f) for f in fields]


def print_encrypted(fields: list[EncryptedInput], console: Any) -> None:
    """The trace's "Encrypted inputs" section (nothing without encrypted fields)."""
    if not fields:
        return
    from rich.markup import escape

    console.print("[bold]Encrypted inputs[/]")
    colour = {"decrypted": "green", "sealed": "cyan", "erased": "yellow"}
    for f in fields:
        shown = json.dumps(f.value, ensure_ascii=False) if f.status == "decrypted" else f.detail
        console.print(
            f"  [{colour.get(f.status, 'red')}]{f.status:9}[/] {escape(f.path)}: {escape(shown)}"
        )
