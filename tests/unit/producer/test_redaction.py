"""Source-side redaction: rules, paths, copy-on-write, hashing and policy loading."""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from decision_audit.producer.redaction import (
    HASH_PREFIX,
    RedactionPolicy,
    RedactionRule,
    Redactor,
    canonical_json,
)

SECRET = b"s" * 32


def policy(*rules: dict[str, Any], id: str = "pii", version: int | str = 3) -> RedactionPolicy:
    return RedactionPolicy.model_validate({"id": id, "version": version, "rules": list(rules)})


def redactor(*rules: dict[str, Any], secret: bytes | None = SECRET) -> Redactor:
    return policy(*rules).compile(secret)


def expected_hash(value: Any, secret: bytes = SECRET) -> str:
    data = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    return HASH_PREFIX + hmac.new(secret, data, hashlib.sha256).hexdigest()


@pytest.fixture
def event() -> dict[str, Any]:
    return {
        "amount": 1200,
        "ssn": "123-45-6789",
        "applicant": {
            "name": "Ada",
            "address": {"street": "1 Main St", "city": "Paris"},
            "spouse": {"name": "Bob", "ssn": "987"},
        },
        "contacts": [
            {"email": "a@example.com", "phone": "1"},
            {"email": "b@example.com"},
            "not-an-object",
        ],
        "history": [[1, 2], [3]],
    }


# -- actions --------------------------------------------------------------------------------


def test_drop_mask_hash_top_level(event: dict[str, Any]) -> None:
    r = redactor(
        {"path": "ssn", "action": "drop"},
        {"path": "amount", "action": "mask"},
        {"path": "applicant", "action": "hash"},
    )
    out = r.apply(event)
    assert "ssn" not in out
    assert out["amount"] == "***"
    assert out["applicant"] == expected_hash(event["applicant"])
    assert list(out) == ["amount", "applicant", "contacts", "history"]  # order kept


def test_mask_custom_replacement(event: dict[str, Any]) -> None:
    out = redactor({"path": "ssn", "action": "mask", "replacement": "[redacted]"}).apply(event)
    assert out["ssn"] == "[redacted]"


def test_nested_paths(event: dict[str, Any]) -> None:
    out = redactor(
        {"path": "applicant.address.street", "action": "drop"},
        {"path": "applicant.name", "action": "hash"},
        {"path": "applicant.spouse.ssn", "action": "mask"},
    ).apply(event)
    assert out["applicant"]["address"] == {"city": "Paris"}
    assert out["applicant"]["name"] == expected_hash("Ada")
    assert out["applicant"]["spouse"] == {"name": "Bob", "ssn": "***"}


def test_wildcard_over_object_keys(event: dict[str, Any]) -> None:
    out = redactor({"path": "applicant.*.name", "action": "mask"}).apply(event)
    assert out["applicant"]["spouse"]["name"] == "***"
    assert out["applicant"]["name"] == "Ada"  # a string, not an object: nothing below it
    assert out["applicant"]["address"] == event["applicant"]["address"]  # no "name" key


def test_wildcard_whole_object(event: dict[str, Any]) -> None:
    out = redactor({"path": "applicant.address.*", "action": "mask"}).apply(event)
    assert out["applicant"]["address"] == {"street": "***", "city": "***"}
    out = redactor({"path": "applicant.address.*", "action": "drop"}).apply(event)
    assert out["applicant"]["address"] == {}


def test_list_elements(event: dict[str, Any]) -> None:
    out = redactor(
        {"path": "contacts.*.email", "action": "hash"},
        {"path": "contacts.*.phone", "action": "drop"},
    ).apply(event)
    assert out["contacts"] == [
        {"email": expected_hash("a@example.com")},
        {"email": expected_hash("b@example.com")},
        "not-an-object",
    ]


def test_list_elements_mask_and_drop(event: dict[str, Any]) -> None:
    assert redactor({"path": "history.*.*", "action": "mask"}).apply(event)["history"] == [
        ["***", "***"],
        ["***"],
    ]
    assert redactor({"path": "history.*", "action": "drop"}).apply(event)["history"] == []
    assert redactor({"path": "history.*", "action": "hash"}).apply(event)["history"] == [
        expected_hash([1, 2]),
        expected_hash([3]),
    ]


def test_top_level_wildcard() -> None:
    out = redactor({"path": "*", "action": "mask"}).apply({"a": 1, "b": {"c": 2}})
    assert out == {"a": "***", "b": "***"}


# -- overlaps -------------------------------------------------------------------------------


def test_prefix_rule_wins(event: dict[str, Any]) -> None:
    out = redactor(
        {"path": "applicant.address.street", "action": "mask"},
        {"path": "applicant", "action": "hash"},
    ).apply(event)
    # The whole original object is hashed, so it still joins with events without the
    # narrower rule.
    assert out["applicant"] == expected_hash(event["applicant"])


def test_wildcard_and_explicit_strictest_wins(event: dict[str, Any]) -> None:
    out = redactor(
        {"path": "applicant.spouse.ssn", "action": "hash"},
        {"path": "applicant.*.ssn", "action": "drop"},
        {"path": "applicant.*.name", "action": "mask", "replacement": "W"},
        {"path": "applicant.spouse.name", "action": "mask", "replacement": "E"},
    ).apply(event)
    assert out["applicant"]["spouse"] == {"name": "W"}  # drop > hash; tie -> first listed


def test_duplicate_path_rejected() -> None:
    with pytest.raises(ValidationError, match="more than one rule"):
        policy({"path": "a", "action": "drop"}, {"path": "a", "action": "mask"})


# -- copy-on-write --------------------------------------------------------------------------


def test_input_unchanged(event: dict[str, Any]) -> None:
    before = copy.deepcopy(event)
    r = redactor(
        {"path": "ssn", "action": "drop"},
        {"path": "applicant.address.street", "action": "hash"},
        {"path": "contacts.*.email", "action": "mask"},
        {"path": "history.*", "action": "drop"},
    )
    out = r.apply(event)
    assert event == before
    assert out is not event
    # Only containers along modified paths are copied; the rest is shared.
    assert out["applicant"] is not event["applicant"]
    assert out["applicant"]["spouse"] is event["applicant"]["spouse"]
    assert out["contacts"] is not event["contacts"]
    assert out["contacts"][2] is event["contacts"][2]


def test_no_match_returns_new_shallow_copy(event: dict[str, Any]) -> None:
    r = redactor({"path": "nope.deeper", "action": "drop"}, {"path": "x.*.y", "action": "mask"})
    out = r.apply(event)
    assert out == event
    assert out is not event
    assert out["applicant"] is event["applicant"]


def test_missing_and_mistyped_paths_ignored(event: dict[str, Any]) -> None:
    r = redactor(
        {"path": "missing", "action": "drop"},
        {"path": "applicant.missing.deep", "action": "hash"},
        {"path": "ssn.deeper", "action": "mask"},  # ssn is a string
        {"path": "amount.*", "action": "mask"},  # amount is a number
    )
    assert r.apply(event) == event
    assert r.apply({}) == {}


# -- hashing --------------------------------------------------------------------------------


def test_hash_stable_and_keyed() -> None:
    rules = {"path": "email", "action": "hash"}
    a = redactor(rules).apply({"email": "a@example.com"})["email"]
    assert a.startswith(HASH_PREFIX) and len(a) == len(HASH_PREFIX) + 64
    assert redactor(rules).apply({"email": "a@example.com"})["email"] == a
    assert redactor(rules, secret=b"other-secret").apply({"email": "a@example.com"})["email"] != a
    assert redactor(rules).apply({"email": "b@example.com"})["email"] != a


def test_equal_values_hash_equal() -> None:
    r = redactor({"path": "*.id", "action": "hash"}, {"path": "x", "action": "hash"})
    out = r.apply(
        {
            "left": {"id": {"b": 1, "a": [1, "é"]}},
            "right": {"id": {"a": [1, "é"], "b": 1}},  # same value, other key order
            "x": {"a": [1, "é"], "b": 1},
        }
    )
    assert out["left"]["id"] == out["right"]["id"] == out["x"]
    assert out["x"] == r.hash_value({"a": [1, "é"], "b": 1})
    assert canonical_json({"b": 1, "a": "é"}) == '{"a":"é","b":1}'.encode()


def test_hash_unserialisable_value_names_rule() -> None:
    r = redactor({"path": "v", "action": "hash"})
    with pytest.raises(ValueError, match="'v'"):
        r.apply({"v": float("nan")})
    with pytest.raises(ValueError, match="'v'"):
        r.apply({"v": object()})


def test_hash_rule_without_secret_names_path() -> None:
    p = policy({"path": "ssn", "action": "drop"}, {"path": "applicant.dob", "action": "hash"})
    with pytest.raises(ValueError, match=r"applicant\.dob"):
        p.compile()
    with pytest.raises(ValueError, match=r"applicant\.dob"):
        p.compile(b"")
    # Without hash rules no secret is needed.
    assert policy({"path": "ssn", "action": "drop"}).compile().apply({"ssn": 1}) == {}


# -- policy model ---------------------------------------------------------------------------


def test_policy_ref() -> None:
    assert redactor({"path": "a", "action": "drop"}).policy_ref == "pii@3"
    assert policy(id="kyc", version="2024-06").compile().policy_ref == "kyc@2024-06"
    assert policy().ref == "pii@3"


def test_models_frozen() -> None:
    p = policy({"path": "a", "action": "drop"})
    with pytest.raises(ValidationError):
        p.id = "other"  # type: ignore[misc]
    with pytest.raises(ValidationError):
        p.rules[0].path = "b"  # type: ignore[misc]


@pytest.mark.parametrize(
    "rule",
    [
        {"path": "a", "action": "shred"},  # unknown action
        {"path": "", "action": "drop"},  # empty path
        {"path": "a..b", "action": "drop"},  # empty segment
        {"path": "a.", "action": "drop"},
        {"path": "contacts[].email", "action": "drop"},  # unsupported syntax
        {"path": "a.b*", "action": "drop"},  # partial wildcard
        {"path": "a", "action": "drop", "replacement": "x"},  # replacement w/o mask
        {"path": "a", "action": "drop", "extra": 1},  # extra field
        {"action": "drop"},  # no path
    ],
)
def test_bad_rule_rejected(rule: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        policy(rule)
    with pytest.raises(ValidationError):
        RedactionRule.model_validate(rule)


@pytest.mark.parametrize(
    "data",
    [
        {"id": "pii", "version": 1, "rules": [], "owner": "x"},  # extra field
        {"id": "", "version": 1},
        {"id": "a@b", "version": 1},
        {"id": "pii", "version": -1},
        {"id": "pii"},
        {"id": "pii", "version": 1, "rules": "ssn"},
    ],
)
def test_bad_policy_rejected(data: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        RedactionPolicy.model_validate(data)


# -- loading --------------------------------------------------------------------------------

POLICY_DATA = {
    "id": "loan-pii",
    "version": 7,
    "description": "loan applications",
    "rules": [
        {"path": "applicant.ssn", "action": "drop"},
        {"path": "applicant.name", "action": "mask", "replacement": "<name>"},
        {"path": "contacts.*.email", "action": "hash"},
    ],
}


def test_load_json(tmp_path: Path) -> None:
    f = tmp_path / "policy.json"
    f.write_text(json.dumps(POLICY_DATA), encoding="utf-8")
    p = RedactionPolicy.load(f)
    assert p == RedactionPolicy.model_validate(POLICY_DATA)
    assert p.compile(SECRET).policy_ref == "loan-pii@7"


def test_load_yaml(tmp_path: Path) -> None:
    pytest.importorskip("yaml")
    text = """\
id: loan-pii
version: 7
description: loan applications
rules:
  - path: applicant.ssn
    action: drop
  - {path: applicant.name, action: mask, replacement: "<name>"}
  - path: contacts.*.email
    action: hash
"""
    for name in ("policy.yaml", "policy.YML"):
        f = tmp_path / name
        f.write_text(text, encoding="utf-8")
        p = RedactionPolicy.load(str(f))
        assert p == RedactionPolicy.model_validate(POLICY_DATA)
    out = p.compile(SECRET).apply(
        {"applicant": {"ssn": "1", "name": "Ada"}, "contacts": [{"email": "a@x"}]}
    )
    assert out == {
        "applicant": {"name": "<name>"},
        "contacts": [{"email": expected_hash("a@x")}],
    }


def test_load_yaml_without_pyyaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "policy.yaml"
    f.write_text("id: x\nversion: 1\n", encoding="utf-8")
    monkeypatch.setitem(sys.modules, "yaml", None)  # makes `import yaml` fail
    with pytest.raises(ImportError, match="pip install pyyaml"):
        RedactionPolicy.load(f)


def test_load_bad_files(tmp_path: Path) -> None:
    f = tmp_path / "policy.toml"
    f.write_text("", encoding="utf-8")
    with pytest.raises(ValueError, match="unknown policy file type"):
        RedactionPolicy.load(f)
    f = tmp_path / "bad.json"
    f.write_text(json.dumps({"id": "x", "version": 1, "rules": [{"path": "a"}]}))
    with pytest.raises(ValidationError):
        RedactionPolicy.load(f)
