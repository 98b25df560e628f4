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
    fields and policy versions sharing the secret.

Overlaps
    When one rule's path is a prefix of another's, the shorter one applies to the whole
    value and the longer one is moot. When several rules hit the same value (``a.*.x`` and
    ``a.b.x``), the strictest wins: ``drop`` over ``mask`` over ``hash``, then the rule
    listed first. The same path twice is refused.

Free text
    A failed inference's ``error_message`` is text, not a JSON object: no path can address a
    name or an account number inside it. The policy's ``error_message`` rule
    (:class:`TextRule`) decides what leaves the process: ``keep`` it (the default), ``mask``
    it, ``hash`` it (as a ``hash`` rule would the string) or ``drop`` it, keeping the
    ``error_type``; a kept message is truncated to ``max_chars`` (1024 by default) with a
    closing ``…``. Without a policy, messages are kept and truncated the same way.

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
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, Final, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

__all__ = [
    "HASH_PREFIX",
    "WILDCARD",
    "RedactionPolicy",
    "RedactionRule",
    "Redactor",
    "TextRule",
    "redact_text",
    "truncate",
]

WILDCARD: Final = "*"
HASH_PREFIX: Final = "hmac-sha256:"
DEFAULT_MASK: Final = "***"
ELLIPSIS: Final = "…"
MAX_TEXT_CHARS: Final = 8192
"""the contract's bound on an ``error_message`` (decision_audit.contract.models)"""

Action = Literal["drop", "mask", "hash"]
Ref = Annotated[str, StringConstraints(min_length=1, max_length=256, pattern=r"^[^@\s]+$")]

# Strictness when several rules hit the same value: higher wins.
_STRICTNESS: Final[dict[str, int]] = {"hash": 1, "mask": 2, "drop": 3}


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
        if self.replacement is not None and self.action != "mask":
            raise ValueError(f"{self.path}: replacement is only valid with action 'mask'")
        return self

    @property
    def segments(self) -> tuple[str, ...]:
        return tuple(self.path.split("."))


def truncate(text: str, max_chars: int) -> str:
    """``text`` cut to ``max_chars`` characters, the last one ``…`` when it was cut."""
    if len(text) <= max_chars:
        return text
    return text[: max_chars - 1] + ELLIPSIS


class TextRule(BaseModel):
    """What happens to a free-text field (a failed inference's ``error_message``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    action: Literal["keep", "drop", "mask", "hash"] = "keep"
    max_chars: Annotated[int, Field(ge=1, le=MAX_TEXT_CHARS)] = 1024
    """a kept message longer than this is cut (``…`` marks the cut)"""
    replacement: str | None = None
    """The mask text; only for ``action="mask"`` (default ``"***"``)."""

    @model_validator(mode="after")
    def _check_replacement(self) -> Self:
        if self.replacement is not None and self.action != "mask":
            raise ValueError("error_message: replacement is only valid with action 'mask'")
        return self


class RedactionPolicy(BaseModel):
    """A published, versioned set of redaction rules (no secrets in here)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: Ref
    version: Annotated[int, Field(ge=0)] | Ref
    rules: tuple[RedactionRule, ...] = ()
    error_message: TextRule = TextRule()
    """what a failed inference's error message becomes (kept and truncated by default)"""
    description: str | None = None

    @field_validator("rules")
    @classmethod
    def _unique_paths(cls, rules: tuple[RedactionRule, ...]) -> tuple[RedactionRule, ...]:
        seen: set[str] = set()
        for rule in rules:
            if rule.path in seen:
                raise ValueError(f"path {rule.path!r} appears in more than one rule")
            seen.add(rule.path)
        return rules

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

    __slots__ = ("_hmac", "_policy", "_root")

    def __init__(self, policy: RedactionPolicy, secret: bytes | None = None) -> None:
        hash_paths = [r.path for r in policy.rules if r.action == "hash"]
        if policy.error_message.action == "hash":
            hash_paths.append("error_message")
        if secret is not None and not isinstance(secret, bytes | bytearray):
            raise TypeError("secret must be bytes")
        if hash_paths and not secret:
            raise ValueError(
                f"redaction policy {policy.ref}: hash rule(s) {', '.join(hash_paths)} "
                "need a non-empty HMAC secret; pass secret= to compile()"
            )
        self._policy = policy
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
        """A new dict with the policy applied; ``inputs`` is left untouched."""
        out = _walk_dict(self._root, inputs)
        return dict(inputs) if out is None else out

    __call__ = apply

    def error_message(self, text: str) -> str | None:
        """What the policy's ``error_message`` rule makes of a failed inference's message."""
        return redact_text(self._policy.error_message, text, self._hash)


def redact_text(
    rule: TextRule, text: str, hash_value: Callable[[Any, str], str] | None = None
) -> str | None:
    """``text`` after ``rule``: kept (truncated), masked, hashed or dropped (None)."""
    if rule.action == "keep":
        return truncate(text, rule.max_chars)
    if rule.action == "mask":
        return DEFAULT_MASK if rule.replacement is None else rule.replacement
    if rule.action == "hash":
        if hash_value is None:
            raise ValueError("a hash rule for error_message needs the policy's HMAC secret")
        return hash_value(text, "error_message")
    return None


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
