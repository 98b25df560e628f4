"""The README imports only public names: what ``decision_audit`` exports, or a documented
entry point of its own (an extra's module, which the package itself must not import)."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import decision_audit

README = Path(__file__).resolve().parents[2] / "README.md"
ENTRY_POINTS = {
    # The [metrics] extra: needs prometheus-client, so not re-exported from decision_audit.
    "from decision_audit.producer.metrics import instrument",
}
_IMPORT = re.compile(
    r"^\s*(?P<stmt>from\s+(?P<module>decision_audit(?:\.[\w.]+)?)\s+import\s+"
    r"(?:\((?P<group>[^)]*)\)|(?P<names>[^\n#]+)))",
    re.MULTILINE,
)
_PLAIN_IMPORT = re.compile(r"^\s*import\s+decision_audit\.[\w.]+", re.MULTILINE)


def _imports() -> list[tuple[str, str, list[str]]]:
    """``(statement, module, names)`` of every ``from decision_audit… import`` in the README."""
    found = []
    for m in _IMPORT.finditer(README.read_text(encoding="utf-8")):
        names = (m["group"] or m["names"]).replace("\n", " ")
        found.append(
            (
                " ".join(m["stmt"].split()),
                m["module"],
                [n.split(" as ")[0].strip() for n in names.split(",") if n.strip()],
            )
        )
    return found


def test_the_readme_imports_public_names_or_a_documented_entry_point() -> None:
    imports = _imports()
    assert imports, "no decision_audit import found in the README: is the pattern stale?"
    for stmt, module, names in imports:
        if module == "decision_audit":
            missing = [n for n in names if n not in decision_audit.__all__]
            assert not missing, f"{stmt}: not in decision_audit.__all__: {missing}"
        else:
            assert stmt in ENTRY_POINTS, f"{stmt}: not public (decision_audit.__all__) nor listed"
    assert not _PLAIN_IMPORT.findall(README.read_text(encoding="utf-8"))


def test_the_entry_points_exist_and_are_in_the_readme() -> None:
    statements = {stmt for stmt, _, _ in _imports()}
    for stmt in ENTRY_POINTS:
        assert stmt in statements, f"listed but no longer in the README: {stmt}"
        m = _IMPORT.match(stmt)
        assert m is not None
        module = importlib.import_module(m["module"])
        assert hasattr(module, m["names"].strip()), stmt
