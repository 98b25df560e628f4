"""The docs' tables of worker options agree with the settings model the CLI is built from."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import TypeAdapter

from decision_audit.cli.reference import BEGIN, END, with_table, worker_options_table
from decision_audit.clickhouse.settings import ClickHouseSettings
from decision_audit.worker.settings import WorkerSettings

ROOT = Path(__file__).resolve().parents[3]
ROW_RE = re.compile(r"^\| `DECISION_AUDIT_([A-Z0-9_]+)` \| ([^|]*) \|", re.M)


def test_readme_worker_options_are_the_generated_table() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert BEGIN in text and END in text
    assert with_table(text) == text, (
        "README.md's worker options differ from WorkerSettings: run "
        "`python -m decision_audit.cli.reference README.md`"
    )


def test_generated_table_has_a_row_per_setting() -> None:
    table = worker_options_table()
    for name in WorkerSettings.model_fields:
        assert f"| `{name.upper()}` |" in table, name


def test_deploy_readme_defaults_are_the_models() -> None:
    """deploy/README.md lists the worker's env vars with their defaults: each must be the
    model's (`unset` for None)."""
    text = (ROOT / "deploy" / "README.md").read_text(encoding="utf-8")
    worker_part = text.split("Producer library", 1)[0]
    rows = ROW_RE.findall(worker_part)
    assert rows, "deploy/README.md lists no DECISION_AUDIT_* defaults"
    fields = {**ClickHouseSettings.model_fields, **WorkerSettings.model_fields}
    for var, cell in rows:
        field = fields.get(var.lower())
        assert field is not None, f"DECISION_AUDIT_{var} is not a worker setting"
        shown = re.findall(r"`([^`]*)`", cell)
        if field.default is None:
            assert cell.strip() == "unset", (var, cell)
            continue
        assert shown, (var, cell)
        value = TypeAdapter(field.annotation).validate_python(shown[0])
        assert value == field.default, f"DECISION_AUDIT_{var}: documented {cell.strip()}"


# `DECISION_AUDIT_X` or `--x`, then at once its value: " (60 s)", ", 300000", " tries (12)".
PROSE_RE = re.compile(
    r"`(?:DECISION_AUDIT_(?P<env>[A-Z0-9_]+)|--(?P<flag>[a-z0-9-]+))`"
    r"(?: tries| seconds)?,? \(?(?P<value>\d[\d_]*(?:\.\d+)?)"
)


def test_readme_prose_defaults_are_the_models() -> None:
    """Where the README's prose gives a worker setting's value next to its name, it is the
    model's default."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    checked = 0
    for m in PROSE_RE.finditer(text):
        name = (m["env"] or m["flag"] or "").lower().replace("-", "_")
        field = WorkerSettings.model_fields.get(name)
        if field is None or not isinstance(field.default, int | float):
            continue
        checked += 1
        documented = float(m["value"].replace("_", ""))
        assert documented == float(field.default), f"README: {m[0]!r}, default {field.default}"
    assert checked >= 5, "the README's prose no longer names worker defaults this test can see"
