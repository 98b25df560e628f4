"""The stable codes the trail records: why a message was quarantined, what the worker noticed
while reading (incidents), what ``verify`` found.

Each value is stored (``quarantine.reason``, ``incidents.kind``), sent (the DLQ's
``da-reason`` header), counted (the worker's ``quarantined_total{reason}``) or reported
(``verify``), so a released value never changes; a new code is a new member. Each member
carries its one-line meaning (``.meaning``); the README's tables list the same codes
(tests/unit/contract/test_reasons.py keeps them in step).
"""

from __future__ import annotations

from enum import StrEnum


class Code(StrEnum):
    """A stable code (its value) with a one-line meaning. Members compare equal to their value."""

    meaning: str

    def __new__(cls, value: str, meaning: str = "") -> Code:
        member = str.__new__(cls, value)
        member._value_ = value
        member.meaning = meaning
        return member


class Reason(Code):
    """Why a message was quarantined (and sent to the DLQ) instead of stored."""

    EMPTY_VALUE = "empty_value", "message has no value"
    OVERSIZED = "oversized", "message larger than max_event_bytes"
    BAD_MAGIC = (
        "bad_magic",
        "not Avro single-object encoding (nor, with a schema registry, Confluent framing)",
    )
    UNKNOWN_SCHEMA = (
        "unknown_schema",
        "writer schema (by fingerprint, or registered under its schema id) is not a shipped one",
    )
    UNKNOWN_SCHEMA_ID = (
        "unknown_schema_id",
        "Confluent-framed message whose schema id the schema registry does not know",
    )
    MALFORMED_AVRO = "malformed_avro", "body does not decode with its writer schema"
    UNEXPECTED_RECORD = "unexpected_record", "a record type this topic does not carry"
    MISSING_HASH = "missing_hash", "no da-event-hash header"
    HASH_MISMATCH = (
        "hash_mismatch",
        "SHA-256(prev_hash ‖ body) differs from the da-event-hash header",
    )
    KEY_MISMATCH = "key_mismatch", "message key is not the event's producer_id"
    INVALID_EVENT = "invalid_event", "decoded fields violate the event contract"
    INVALID_TIMESTAMP = (
        "invalid_timestamp",
        "occurred_at is implausibly far in the past or future",
    )
    UNATTESTED = (
        "unattested",
        "event of an unsigned chain while the worker requires signatures",
    )
    UNKNOWN_KEY = "unknown_key", "signed with a key id that is not among the worker's --keys"
    BAD_SIGNATURE = "bad_signature", "checkpoint signature does not verify with its key"
    CHECKPOINT_MISMATCH = (
        "checkpoint_mismatch",
        "checkpoint head differs from the stored event at that seq",
    )
    CHAIN_BREAK = "chain_break", "prev_hash is not the hash of the chain's previous event"
    CHAIN_FORK = "chain_fork", "a seq already stored with different content"
    LATE_EVENT = "late_event", "a seq below the chain head that was never stored (a recorded gap)"


class IncidentKind(Code):
    """What the worker detected and stored anyway, recorded in ``incidents``."""

    SEQ_GAP = "seq_gap", "seqs missing from a chain before an event that was stored"
    UNAPPROVED_PROMOTION = (
        "unapproved_promotion",
        "a promotion to production without a recorded approval or a required attestation",
    )
    UNKNOWN_DECISION = (
        "unknown_decision",
        "an outcome or review names a decision that was not stored when it arrived",
    )
    ARTIFACT_MISMATCH = (
        "artifact_mismatch",
        "reconcile: an artifact's SHA-256 differs from the one its lifecycle event recorded",
    )
    ARTIFACT_MISSING = (
        "artifact_missing",
        "reconcile: the artifact a lifecycle event names is not where it says",
    )


class ProblemKind(Code):
    """What ``verify`` found wrong with a stored chain."""

    UNDECODABLE_ROW = "undecodable_row", "the stored raw bytes do not decode"
    ALTERED_ROW = "altered_row", "a row's columns or hash differ from its original bytes"
    REORDERED_ROW = "reordered_row", "a row's seq column differs from the seq in its original bytes"
    DELETED_ROWS = "deleted_rows", "seqs missing from the chain"
    INSERTED_ROW = (
        "inserted_row",
        "a row that does not belong in the chain (duplicate seq or broken link)",
    )
    CHAIN_BREAK = "chain_break", "prev_hash does not match the previous event's hash"
    FORGED_CHECKPOINT = "forged_checkpoint", "a checkpoint signature that does not verify"
    UNKNOWN_KEY = "unknown_key", "a checkpoint signed with a key id not among --keys"
    CHECKPOINT_MISMATCH = (
        "checkpoint_mismatch",
        "a validly signed checkpoint names another chain head",
    )
    MISSING_CHECKPOINT = (
        "missing_checkpoint",
        "a signed chain whose latest events no checkpoint covers",
    )


class WitnessProblemKind(Code):
    """What ``verify`` found wrong with a witness log or with a chain a witness names."""

    UNPROVEN_PRUNING = (
        "unproven_pruning",
        "a chain pruned past its witnessed head by a pruning no retention run accounts for "
        "(no run record, or run less than its window after the witness saw the chain)",
    )
    NO_WITNESS = "no_witness", "a witness is expected and the witness log is empty"
    UNWITNESSED_CHAIN = (
        "unwitnessed_chain",
        "a witness is expected and a stored chain is in no witness statement",
    )
    MISSING_CHAIN = "missing_chain", "a witnessed chain has no events left (it was deleted)"
    TRUNCATED_CHAIN = (
        "truncated_chain",
        "a witnessed chain is stored only up to a seq below the witnessed one (tail deleted)",
    )
    MISSING_HEAD = "missing_head", "the witnessed head event of a chain is not stored"
    HEAD_MISMATCH = (
        "head_mismatch",
        "the hash stored (or recorded by retention) at the witnessed seq is not the witnessed head",
    )
    BAD_SIGNATURE = (
        "bad_signature",
        "a statement's signature does not verify with its witness's key (forged or edited)",
    )
    UNKNOWN_KEY = "unknown_key", "a statement by a witness whose key is not among --keys"
    BROKEN_LINK = (
        "broken_link",
        "a statement's prev_hash is not the hash of the statement before it",
    )
    MISSING_STATEMENT = "missing_statement", "a seq missing from a witness log"
    DIGEST_MISMATCH = (
        "digest_mismatch",
        "a statement's total and digest differ from those of the set folded up to it",
    )
    RESTATEMENT_MISMATCH = (
        "restatement_mismatch",
        "a full restatement drops a chain folded before it or lists another head of it",
    )
    FORK = "fork", "two different statements with the same seq in one witness log"
    EDITED = "edited", "a row's witness_id or seq differs from its signed statement's"
    WITNESS_REWRITTEN = (
        "witness_rewritten",
        "a statement moves a chain back or changes its head, or the topic's copy of a "
        "statement is missing from or different in witness_statements",
    )
    UNREADABLE = "unreadable", "a stored statement that does not decode"
