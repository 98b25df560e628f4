"""Source-side PII redaction of decision inputs, before anything leaves the process.

A :class:`RedactionPolicy` is declarative and safe to publish: an ``id``, a ``version`` and
a list of :class:`RedactionRule`. Compiling it with the HMAC secret gives a
:class:`Redactor`, whose :meth:`Redactor.apply` returns the redacted inputs and whose
:attr:`Redactor.policy_ref` (``"<id>@<version>"``) is recorded in every event, so an auditor
knows what was hidden and under which policy.

Paths
    Dotted segments address nested objects: ``applicant.address.street``. The segment
    ``*`` matches every key of an object *and* every element of an array, so
    ``contacts.*.email`` is the ``email`` of each element of the ``contacts`` array (or of
    each value of a ``contacts`` object). ``*`` is only special as a whole segment; ``[]``
    and ``[n]`` are not supported (use ``*``). Keys containing ``.``, or a key that is
    literally ``*``, cannot be addressed. Paths that are absent from an event, or that run
    into a value of another type, are ignored.

Actions
    ``drop``  removes the key (on array elements: removes the elements, so ``xs.*`` with
    ``drop`` leaves an empty array). ``mask`` replaces the value by ``replacement``
    (default ``"***"``). ``hash`` replaces it by ``"hmac-sha256:<hex>"``, the HMAC-SHA256
    under the secret of the UTF-8 canonical JSON of the value (sorted keys, no whitespace,
    non-ASCII kept), so equal values give equal outputs and still join across events,
    fields and policy versions sharing the secret. ``encrypt`` replaces it by an encrypted
    object (``{"$enc": "aes-256-gcm", "kid": ..., "sub": ..., "iv": ..., "ct": ...}``,
    decision_audit.contract.sealing) that holders of the key store's private key can open
    until the data subject is erased; see :meth:`Redactor.seal`.

Subject
    ``encrypt`` rules encrypt under a key tied to the data subject the event is about: its
    id is read from the input path ``subject`` of the policy (before redaction; a string or
    an integer), or passed to :meth:`Redactor.seal` (``log_decision(..., subject_id=...)``).
    Ids are compared as text (an integer 42 is the subject ``"42"``). The id itself must not
    stay in the clear: ``subject`` must be covered by a rule of its own (``hash`` of a string
    id writes the very HMAC the key store files the subject's keys under).

Overlaps
    When one rule's path is a prefix of another's, the shorter one applies to the whole
    value and the longer one is moot. When several rules hit the same value (``a.*.x`` and
    ``a.b.x``), the strictest wins: ``drop`` over ``mask`` over ``hash`` over ``encrypt``
    (which key holders can read), then the rule listed first. The same path twice is refused.

Free text
    A failed inference's ``error_message`` is text, not a JSON object: no path can address a
    name or an account number inside it. The policy's ``error_message`` rule
    (:class:`TextRule`) decides what leaves the process: ``keep`` it (the default), ``mask``
    it, ``hash`` it (as a ``hash`` rule would the string) or ``drop`` it, keeping the
    ``error_type``; a kept message is truncated to ``max_chars`` (1024 by default) with a
    closing ``…``. Without a policy, messages are kept and truncated the same way. A review's
    ``reason``, written by a person, is free text too: the ``review_reason`` rule says what it
    becomes (kept up to the contract's 8192 characters by default).

Outcomes and overrides
    An outcome's ``actual`` and an override's ``final_decision`` are values (a label or any
    JSON) that may name the person too: the ``outcome_actual`` and ``final_decision`` rules
    (:class:`ValueRule`) ``keep`` them (the default), ``mask`` them or ``hash`` them (as a
    ``hash`` rule would the value, so equal values still join); both are required by their
    records, so they cannot be dropped. Outcomes and reviews are stamped with the policy's
    ``ref`` like decisions.

Cost
    Paths are compiled once into a trie. :meth:`Redactor.apply` only visits keys named by a
    rule (all keys of an object only under ``*``), and copies only the containers on the
    way to a changed value: unchanged nested containers are shared with the input, so treat
    both as read-only. The input itself is never mutated.
"""

from __future__ import annotations

import hashlib
import hmac
import importlib
import json
import os
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, Final, Literal, Protocol, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from decision_audit.contract.fields import MAX_ERROR_MESSAGE, MAX_REASON

__all__ = [
    "HASH_PREFIX",
    "WILDCARD",
    "EventBox",
    "RedactionPolicy",
    "RedactionRule",
    "Redactor",
    "Sealer",
    "TextRule",
    "ValueRule",
    "redact_text",
    "truncate",
]

WILDCARD: Final = "*"
HASH_PREFIX: Final = "hmac-sha256:"
DEFAULT_MASK: Final = "***"
ELLIPSIS: Final = "…"
MAX_TEXT_CHARS: Final = min(MAX_ERROR_MESSAGE, MAX_REASON)
"""the contract's bound on an ``error_message`` and a ``reason`` (decision_audit.contract.fields)"""

Action = Literal["drop", "mask", "hash", "encrypt"]
Ref = Annotated[str, StringConstraints(min_length=1, max_length=256, pattern=r"^[^@\s]+$")]

# Strictness when several rules hit the same value: higher wins.
_STRICTNESS: Final[dict[str, int]] = {"encrypt": 0, "hash": 1, "mask": 2, "drop": 3}


class _Drop:
    """Sentinel returned by a ``drop`` action."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<drop>"


_DROP: Final = _Drop()


def canonical_json(value: Any) -> bytes:
    """The bytes a ``hash`` rule authenticates: sorted keys, compact, UTF-8, no NaN."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode()


class RedactionRule(BaseModel):
    """One field path and what to do with its value."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    path: Annotated[str, StringConstraints(min_length=1, max_length=1024)]
    action: Action
    replacement: str | None = None
    """The mask text; only for ``action="mask"`` (default ``"***"``)."""
    description: str | None = None

    @field_validator("path")
    @classmethod
    def _check_path(cls, path: str) -> str:
        for seg in path.split("."):
            if not seg:
                raise ValueError(f"empty segment in path {path!r}")
            if "[" in seg or "]" in seg:
                raise ValueError(
                    f"segment {seg!r} of {path!r}: array syntax is not supported, use '*' "
                    "(e.g. 'contacts.*.email')"
                )
            if "*" in seg and seg != WILDCARD:
                raise ValueError(f"segment {seg!r} of {path!r}: '*' must be a whole segment")
        return path

    @model_validator(mode="after")
    def _check_replacement(self) -> Self:
        _mask_only(self.action, self.replacement, f"{self.path}: ")
        return self

    @property
    def segments(self) -> tuple[str, ...]:
        return tuple(self.path.split("."))


def _mask_only(action: str, replacement: str | None, where: str = "") -> None:
    """A rule's ``replacement`` is the mask text, so only a ``mask`` rule may have one."""
    if replacement is not None and action != "mask":
        raise ValueError(f"{where}replacement is only valid with action 'mask'")


class EventBox(Protocol):
    """Encrypts the values of one event under its data key (producer.sealing.EventBox)."""

    event_id: str

    def encrypt(self, plaintext: bytes) -> dict[str, str]: ...

    def key_record(self, occurred_at: Any, producer_id: str) -> dict[str, Any]: ...


class Sealer(Protocol):
    """Opens an :class:`EventBox` per event (producer.sealing.KeystoreSealer)."""

    def begin(self, event_id: str, subject_hash: str) -> EventBox: ...


def _covers(rule: tuple[str, ...], path: tuple[str, ...]) -> bool:
    """True when a rule at ``rule`` applies to the value at ``path`` (or one around it)."""
    return len(rule) <= len(path) and all(
        r in (WILDCARD, p) for r, p in zip(rule, path, strict=False)
    )


def truncate(text: str, max_chars: int) -> str:
    """``text`` cut to ``max_chars`` characters, the last one ``…`` when it was cut."""
    if len(text) <= max_chars:
        return text
    return text[: max_chars - 1] + ELLIPSIS


class TextRule(BaseModel):
    """What happens to a free-text field (an ``error_message``, a review's ``reason``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    action: Literal["keep", "drop", "mask", "hash"] = "keep"
    max_chars: Annotated[int, Field(ge=1, le=MAX_TEXT_CHARS)] = 1024
    """a kept message longer than this is cut (``…`` marks the cut)"""
    replacement: str | None = None
    """The mask text; only for ``action="mask"`` (default ``"***"``)."""

    @model_validator(mode="after")
    def _check_replacement(self) -> Self:
        _mask_only(self.action, self.replacement)
        return self


class ValueRule(BaseModel):
    """What happens to a value a record requires (an outcome's ``actual``, an override's
    ``final_decision``): kept as given, masked, or hashed (a label then, not JSON)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    action: Literal["keep", "mask", "hash"] = "keep"
    replacement: str | None = None
    """The mask text; only for ``action="mask"`` (default ``"***"``)."""

    @model_validator(mode="after")
    def _check_replacement(self) -> Self:
        _mask_only(self.action, self.replacement)
        return self


class RedactionPolicy(BaseModel):
    """A published, versioned set of redaction rules (no secrets in here)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: Ref
    version: Annotated[int, Field(ge=0)] | Ref
    rules: tuple[RedactionRule, ...] = ()
    subject: Annotated[str, StringConstraints(min_length=1, max_length=1024)] | None = None
    """input path of the data subject's id, for ``encrypt`` rules (e.g. ``applicant.id``)"""
    error_message: TextRule = TextRule()
    """what a failed inference's error message becomes (kept and truncated by default)"""
    review_reason: TextRule = TextRule(max_chars=MAX_REASON)
    """what a review's reason becomes (kept, up to the contract's limit, by default)"""
    final_decision: ValueRule = ValueRule()
    """what an override's final decision becomes (kept by default)"""
    outcome_actual: ValueRule = ValueRule()
    """what an outcome's actual value becomes (kept by default)"""
    description: str | None = None

    @field_validator("subject")
    @classmethod
    def _check_subject(cls, path: str | None) -> str | None:
        if path is not None and any(not seg or seg == WILDCARD for seg in path.split(".")):
            raise ValueError(
                f"subject {path!r}: name one input value (no empty or '*' segment), "
                "e.g. 'applicant.id'"
            )
        return path

    @model_validator(mode="after")
    def _subject_is_redacted(self) -> Self:
        if self.subject is None:
            return self
        if not self.encrypt_paths:
            raise ValueError(f"subject {self.subject!r} is only used by encrypt rules; add one")
        segments = tuple(self.subject.split("."))
        if not any(_covers(r.segments, segments) for r in self.rules):
            raise ValueError(
                f"subject {self.subject!r} would be stored in the clear: add a rule for it "
                "('hash' keeps it joinable with the key store's subject hash, 'drop' removes it)"
            )
        return self

    @property
    def encrypt_paths(self) -> tuple[str, ...]:
        """The paths of the ``encrypt`` rules."""
        return tuple(r.path for r in self.rules if r.action == "encrypt")

    @field_validator("rules")
    @classmethod
    def _unique_paths(cls, rules: tuple[RedactionRule, ...]) -> tuple[RedactionRule, ...]:
        seen: set[str] = set()
        for rule in rules:
            if rule.path in seen:
                raise ValueError(f"path {rule.path!r} appears in more than one rule")
            seen.add(rule.path)
        return rules

    def free_rules(self) -> tuple[tuple[str, TextRule | ValueRule], ...]:
        """The rules of the fields outside ``inputs``, by policy key."""
        return (
            ("error_message", self.error_message),
            ("review_reason", self.review_reason),
            ("final_decision", self.final_decision),
            ("outcome_actual", self.outcome_actual),
        )

    @property
    def ref(self) -> str:
        """``"<id>@<version>"``, the string recorded in each event."""
        return f"{self.id}@{self.version}"

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Self:
        """Read a policy from a ``.json``, ``.yaml`` or ``.yml`` file."""
        p = Path(path)
        suffix = p.suffix.lower()
        text = p.read_text(encoding="utf-8")
        data: object
        if suffix == ".json":
            data = json.loads(text)
        elif suffix in (".yaml", ".yml"):
            try:
                yaml = importlib.import_module("yaml")
            except ImportError:
                raise ImportError(
                    f"{p}: reading a YAML redaction policy needs PyYAML; "
                    "`pip install pyyaml` or write the policy as JSON"
                ) from None
            data = yaml.safe_load(text)
        else:
            raise ValueError(f"{p}: unknown policy file type {p.suffix!r} (use .json, .yaml, .yml)")
        return cls.model_validate(data)

    def compile(self, secret: bytes | None = None) -> Redactor:
        """A :class:`Redactor` for this policy; ``secret`` keys the ``hash`` rules."""
        return Redactor(self, secret)


class _Act:
    __slots__ = ("apply", "index", "kind", "path")

    def __init__(
        self, kind: str, index: int, path: str, apply: Callable[[Any], Any] | None = None
    ) -> None:
        self.kind = kind
        self.index = index
        self.path = path
        self.apply: Callable[[Any], Any] = apply or (lambda _v: _DROP)


class _Node:
    """A trie node: what to do with the value here, or how to descend into it."""

    __slots__ = ("act", "children", "wildcard")

    def __init__(self) -> None:
        self.act: _Act | None = None
        self.children: dict[str, _Node] = {}
        self.wildcard: _Node | None = None


def _stricter(a: _Act | None, b: _Act | None) -> _Act | None:
    if a is None or b is None:
        return a or b
    ka, kb = _STRICTNESS[a.kind], _STRICTNESS[b.kind]
    if ka != kb:
        return a if ka > kb else b
    return a if a.index <= b.index else b


def _merge(a: _Node | None, b: _Node | None) -> _Node:
    """A fresh node matching what either ``a`` or ``b`` matches."""
    a = a or _Node()
    b = b or _Node()
    out = _Node()
    out.act = _stricter(a.act, b.act)
    for key in a.children.keys() | b.children.keys():
        out.children[key] = _merge(a.children.get(key), b.children.get(key))
    if a.wildcard is not None or b.wildcard is not None:
        out.wildcard = _merge(a.wildcard, b.wildcard)
    return out


def _resolve(node: _Node) -> _Node:
    """Fold the wildcard into explicit siblings and drop rules under an action."""
    if node.act is not None:
        node.children.clear()
        node.wildcard = None
        return node
    if node.wildcard is not None:
        node.children = {k: _merge(c, node.wildcard) for k, c in node.children.items()}
        node.wildcard = _resolve(node.wildcard)
    node.children = {k: _resolve(c) for k, c in node.children.items()}
    return node


class Redactor:
    """A compiled policy: apply it to each event's inputs (and error message)."""

    __slots__ = ("_hmac", "_local", "_policy", "_root", "_subject")

    def __init__(self, policy: RedactionPolicy, secret: bytes | None = None) -> None:
        keyed = [r.path for r in policy.rules if r.action in ("hash", "encrypt")]
        keyed += [name for name, rule in policy.free_rules() if rule.action == "hash"]
        if secret is not None and not isinstance(secret, bytes | bytearray):
            raise TypeError("secret must be bytes")
        if keyed and not secret:
            raise ValueError(
                f"redaction policy {policy.ref}: hash/encrypt rule(s) {', '.join(keyed)} "
                "need a non-empty HMAC secret (hash rules hash with it, encrypt rules key the "
                "subject hash with it); pass secret= to compile()"
            )
        self._policy = policy
        self._subject = None if policy.subject is None else tuple(policy.subject.split("."))
        self._local = threading.local()
        self._hmac = hmac.new(bytes(secret), digestmod=hashlib.sha256) if secret else None
        root = _Node()
        for index, rule in enumerate(policy.rules):
            node = root
            for seg in rule.segments:
                if seg == WILDCARD:
                    if node.wildcard is None:
                        node.wildcard = _Node()
                    node = node.wildcard
                else:
                    node = node.children.setdefault(seg, _Node())
            node.act = _Act(rule.action, index, rule.path, self._action(rule))
        self._root = _resolve(root)

    def _action(self, rule: RedactionRule) -> Callable[[Any], Any] | None:
        if rule.action == "mask":
            text = DEFAULT_MASK if rule.replacement is None else rule.replacement
            return lambda _v: text
        if rule.action == "hash":
            path = rule.path
            return lambda v: self._hash(v, path)
        if rule.action == "encrypt":
            path = rule.path
            return lambda v: self._encrypt(v, path)
        return None

    @property
    def policy(self) -> RedactionPolicy:
        return self._policy

    @property
    def policy_ref(self) -> str:
        """``"<id>@<version>"`` of the policy, to record with each event."""
        return self._policy.ref

    def __repr__(self) -> str:
        return f"Redactor({self.policy_ref!r})"

    def hash_value(self, value: Any) -> str:
        """What a ``hash`` rule turns ``value`` into (e.g. to look a known value up)."""
        return self._hash(value, "<value>")

    def _hash(self, value: Any, path: str) -> str:
        if self._hmac is None:
            raise ValueError(f"redaction policy {self.policy_ref}: no HMAC secret")
        try:
            data = canonical_json(value)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"redaction rule {path!r}: cannot hash value: {exc}") from None
        h = self._hmac.copy()
        h.update(data)
        return HASH_PREFIX + h.hexdigest()

    def apply(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        """A new dict with the policy applied; ``inputs`` is left untouched.

        A value an ``encrypt`` rule hits raises ``ValueError`` here: use :meth:`seal`.
        """
        out = _walk_dict(self._root, inputs)
        return dict(inputs) if out is None else out

    __call__ = apply

    @property
    def encrypts(self) -> bool:
        """True when the policy has ``encrypt`` rules (events need :meth:`seal`)."""
        return bool(self._policy.encrypt_paths)

    def subject_hash(self, subject_id: str) -> str:
        """The keyed hash (hex) the key store files a subject's keys under."""
        if self._hmac is None:
            raise ValueError(f"redaction policy {self.policy_ref}: no HMAC secret")
        h = self._hmac.copy()
        h.update(canonical_json(subject_id))
        return h.hexdigest()

    def seal(
        self,
        inputs: Mapping[str, Any],
        sealer: Sealer,
        event_id: str,
        subject_id: str | None = None,
    ) -> tuple[dict[str, Any], EventBox | None]:
        """:meth:`apply`, encrypting what ``encrypt`` rules hit under a data key of the
        event ``event_id``, drawn from ``sealer``; returns the redacted inputs and the event's
        box (None when nothing was encrypted), whose sealed key the caller sends.

        The subject is ``subject_id``, else the value at the policy's ``subject`` path; a
        ``ValueError`` names what is missing when a value is to be encrypted and neither is.
        """
        ctx = _Sealing(self, sealer, event_id, subject_id, inputs)
        local = self._local
        local.ctx = ctx
        try:
            out = _walk_dict(self._root, inputs)
        finally:
            local.ctx = None
        return (dict(inputs) if out is None else out), ctx.box

    def _encrypt(self, value: Any, path: str) -> dict[str, str]:
        ctx: _Sealing | None = getattr(self._local, "ctx", None)
        if ctx is None:
            raise ValueError(
                f"redaction policy {self.policy_ref}: encrypt rule {path!r} needs the key "
                "store's public key: pass keystore_public_key= to AuditProducer "
                "(DECISION_AUDIT_KEYSTORE_PUBLIC_KEY)"
            )
        try:
            data = canonical_json(value)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"redaction rule {path!r}: cannot encrypt value: {exc}") from None
        return ctx.open(path).encrypt(data)

    def _subject_of(self, inputs: Mapping[str, Any], path: str) -> str:
        """The subject id at the policy's ``subject`` path of ``inputs``."""
        where = self._policy.subject
        if self._subject is None:
            raise ValueError(
                f"redaction policy {self.policy_ref}: encrypt rule {path!r} needs the data "
                "subject's id: pass subject_id= to log_decision, or name its input path as "
                "the policy's 'subject'"
            )
        value: Any = inputs
        for seg in self._subject:
            if not isinstance(value, Mapping) or seg not in value:
                raise ValueError(
                    f"redaction policy {self.policy_ref}: encrypt rule {path!r} needs the data "
                    f"subject's id, but the subject path {where!r} is absent from the inputs; "
                    "pass subject_id= to log_decision"
                )
            value = value[seg]
        if isinstance(value, bool) or not isinstance(value, str | int) or value == "":
            raise ValueError(
                f"redaction policy {self.policy_ref}: the subject path {where!r} holds "
                f"{value!r}, not a subject id (a non-empty string or an integer)"
            )
        return str(value)

    def error_message(self, text: str) -> str | None:
        """What the policy's ``error_message`` rule makes of a failed inference's message."""
        return redact_text(self._policy.error_message, text, self._hash)

    def review_reason(self, text: str) -> str | None:
        """What the policy's ``review_reason`` rule makes of a review's reason."""
        return redact_text(self._policy.review_reason, text, self._hash, "review_reason")

    def final_decision(self, value: Any) -> Any:
        """What the policy's ``final_decision`` rule makes of an override's final decision."""
        return self._value(self._policy.final_decision, value, "final_decision")

    def outcome_actual(self, value: Any) -> Any:
        """What the policy's ``outcome_actual`` rule makes of an outcome's actual value."""
        return self._value(self._policy.outcome_actual, value, "outcome_actual")

    def _value(self, rule: ValueRule, value: Any, name: str) -> Any:
        if rule.action == "keep":
            return value
        if rule.action == "mask":
            return DEFAULT_MASK if rule.replacement is None else rule.replacement
        return self._hash(value, name)


def redact_text(
    rule: TextRule,
    text: str,
    hash_value: Callable[[Any, str], str] | None = None,
    name: str = "error_message",
) -> str | None:
    """``text`` after ``rule``: kept (truncated), masked, hashed or dropped (None)."""
    if rule.action == "keep":
        return truncate(text, rule.max_chars)
    if rule.action == "mask":
        return DEFAULT_MASK if rule.replacement is None else rule.replacement
    if rule.action == "hash":
        if hash_value is None:
            raise ValueError(f"a hash rule for {name} needs the policy's HMAC secret")
        return hash_value(text, name)
    return None


class _Sealing:
    """One :meth:`Redactor.seal` call: the event, its subject and its box once opened."""

    __slots__ = ("box", "event_id", "inputs", "redactor", "sealer", "subject_id")

    def __init__(
        self,
        redactor: Redactor,
        sealer: Sealer,
        event_id: str,
        subject_id: str | None,
        inputs: Mapping[str, Any],
    ) -> None:
        self.redactor = redactor
        self.sealer = sealer
        self.event_id = event_id
        self.subject_id = subject_id
        self.inputs = inputs
        self.box: EventBox | None = None

    def open(self, path: str) -> EventBox:
        """The event's box, opened (data key drawn, subject hashed) on the first value."""
        box = self.box
        if box is None:
            r = self.redactor
            sid = self.subject_id
            if sid is None:
                sid = r._subject_of(self.inputs, path)
            elif not isinstance(sid, str) or not sid:
                raise ValueError(f"subject_id must be a non-empty string, not {sid!r}")
            box = self.box = self.sealer.begin(self.event_id, r.subject_hash(sid))
        return box


def _visit(node: _Node, value: Any) -> Any:
    act = node.act
    if act is not None:
        return act.apply(value)
    new: Any = None
    if isinstance(value, dict):
        new = _walk_dict(node, value)
    elif isinstance(value, list):
        new = _walk_list(node, value)
    return value if new is None else new


def _walk_dict(node: _Node, d: Mapping[str, Any]) -> dict[str, Any] | None:
    """A redacted shallow copy of ``d``, or None when nothing under it changes."""
    out: dict[str, Any] | None = None
    wc = node.wildcard
    if wc is None:
        for key, child in node.children.items():
            old = d.get(key, _DROP)
            if old is _DROP:
                continue
            new = _visit(child, old)
            if new is old:
                continue
            if out is None:
                out = dict(d)
            if new is _DROP:
                del out[key]
            else:
                out[key] = new
    else:
        children = node.children
        for key, old in d.items():
            new = _visit(children.get(key, wc), old)
            if new is old:
                continue
            if out is None:
                out = dict(d)
            if new is _DROP:
                del out[key]
            else:
                out[key] = new
    return out


def _walk_list(node: _Node, items: list[Any]) -> list[Any] | None:
    """A redacted shallow copy of ``items``, or None when nothing under it changes."""
    wc = node.wildcard
    if wc is None or not items:
        return None
    if wc.act is not None and wc.act.kind == "drop":
        return []
    out: list[Any] | None = None
    for i, old in enumerate(items):
        new = _visit(wc, old)
        if new is not old:
            if out is None:
                out = list(items)
            out[i] = new
    return out
