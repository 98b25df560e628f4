"""The contract holds where it is written down more than once: the migrated tables against the
field declarations (contract/fields.py), and the staging query's flags against the reasons
the Python verifier gives (worker/staging.py ``Flag``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from decision_audit.contract import default_codec
from decision_audit.contract.fields import RECORD_KINDS, RecordKind
from decision_audit.contract.keys import KeyRing
from decision_audit.producer.signing import generate_keypair
from decision_audit.worker.checks import EventVerifier, Rejection
from decision_audit.worker.staging import Flag
from tests.integration.test_staging import _flagged_cases, _stager
from tests.unit.contract.test_fields import disagreements

pytestmark = pytest.mark.integration


def _tables() -> list[tuple[RecordKind, str]]:
    return [(kind, table) for kind in RECORD_KINDS for table in kind.tables]


@pytest.mark.parametrize(("kind", "table"), _tables(), ids=lambda x: getattr(x, "schema", x))
def test_the_migrated_table_has_exactly_the_declared_columns(
    ch: Any, database: str, kind: RecordKind, table: str
) -> None:
    rows = ch.query(
        "SELECT name, type, default_kind, default_expression FROM system.columns "
        "WHERE database = {db:String} AND table = {t:String} ORDER BY position",
        parameters={"db": database, "t": table},
    ).result_rows
    assert rows, f"no table {table} after the migrations"
    where = f"the migrated {table} table"
    found = [(name, type_) for name, type_, _, _ in rows]
    problems = disagreements([(c.name, c.type) for c in kind.columns], found, where, "column")
    defaults = {name: expr for name, _, kind_, expr in rows if kind_ == "DEFAULT"}
    problems += [
        f"column {c.name!r}: declared DEFAULT {c.default!r}, {where} has "
        f"{'DEFAULT ' + repr(defaults[c.name]) if c.name in defaults else 'none'}"
        for c in kind.columns
        if c.name in dict(found) and defaults.get(c.name) != c.default
    ]
    problems += [
        f"column {c.name!r} is declared unwritten: it needs a DEFAULT"
        for c in kind.columns
        if not c.written and c.default is None
    ]
    assert not problems, "\n".join(problems)


def test_the_python_verifier_gives_each_staging_flag_its_declared_reason(
    ch: Any, tmp_path: Path
) -> None:
    generate_keypair(tmp_path, "known")
    keyring = KeyRing.load(tmp_path)
    cases = _flagged_cases(tmp_path)
    stager = _stager(ch, keyring)
    for i, (v, k, h) in enumerate(cases.values()):
        assert stager.screen(v, k, h, 0, i) is not None
    flagged = stager.stage()
    assert set(flagged) == set(range(len(cases)))
    verifier = EventVerifier(default_codec(), max_event_bytes=1_000_000, keyring=keyring)
    for (name, (v, k, h)), flag in zip(cases.items(), flagged.values(), strict=True):
        assert isinstance(flag, Flag), name
        result = verifier.check(v, k, h)
        assert isinstance(result, Rejection), name
        assert result.reason == flag.reason, (name, flag, result)
