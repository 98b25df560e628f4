"""The stable codes (contract/reasons.py): values, meanings, and the README that lists them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from decision_audit.contract.reasons import (
    Code,
    IncidentKind,
    ProblemKind,
    Reason,
    WitnessProblemKind,
)

README = Path(__file__).resolve().parents[3] / "README.md"

# The values are stored and sent: they never change once released.
RELEASED = {
    Reason: (
        "empty_value oversized bad_magic unknown_schema malformed_avro unexpected_record "
        "missing_hash hash_mismatch key_mismatch invalid_event invalid_timestamp unattested "
        "unknown_key bad_signature checkpoint_mismatch chain_break chain_fork late_event "
        "unknown_schema_id"
    ),
    IncidentKind: "seq_gap unapproved_promotion",
    ProblemKind: (
        "undecodable_row altered_row reordered_row deleted_rows inserted_row chain_break "
        "forged_checkpoint unknown_key checkpoint_mismatch missing_checkpoint"
    ),
}


@pytest.mark.parametrize("codes", list(RELEASED), ids=lambda c: c.__name__)
def test_released_values_stay_and_every_code_has_a_one_line_meaning(codes: type[Code]) -> None:
    values = [c.value for c in codes]
    missing = set(RELEASED[codes].split()) - set(values)
    assert not missing, f"{codes.__name__} lost released values {sorted(missing)}"
    assert len(set(values)) == len(values)
    for code in codes:
        assert code.meaning and "\n" not in code.meaning, code
        assert code == code.value and str(code) == code.value and codes(code.value) is code


def _readme_table(header: str) -> dict[str, str]:
    text = README.read_text(encoding="utf-8")
    start = text.index(f"| {header} | meaning |")
    rows: dict[str, str] = {}
    for line in text[start:].splitlines()[2:]:
        m = re.fullmatch(r"\| `([a-z_]+)` \| (.+) \|", line)
        if m is None:
            break
        rows[m[1]] = m[2]
    return rows


def test_the_readme_table_lists_every_reason_with_its_meaning() -> None:
    table = _readme_table("reason")
    declared = {r.value: r.meaning for r in Reason}
    assert list(table) == list(declared), (
        f"README reasons table: missing {sorted(set(declared) - set(table))}, "
        f"not declared {sorted(set(table) - set(declared))} (order as in Reason)"
    )
    assert table == declared, "README reasons table: meanings differ from Reason's"


@pytest.mark.parametrize(
    "codes", [IncidentKind, ProblemKind, WitnessProblemKind], ids=lambda c: c.__name__
)
def test_the_readme_names_every_incident_and_problem_kind(codes: type[Code]) -> None:
    text = README.read_text(encoding="utf-8")
    missing = [c.value for c in codes if f"`{c.value}`" not in text]
    assert not missing, f"README does not name the {codes.__name__} values {missing}"
