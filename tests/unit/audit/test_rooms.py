"""The rooms' import direction (issue 13): importing any ``decision_audit.audit`` module loads
no ``decision_audit.worker`` module, and the contract loads neither side."""

from __future__ import annotations

import json
import subprocess
import sys

# Imports each module of a package in turn, in a fresh interpreter, and prints which
# forbidden modules each import brought in (the first import that loaded them).
_PROBE = """
import importlib, json, pkgutil, sys
package, forbidden = sys.argv[1], tuple(sys.argv[2].split(","))
names = sorted(m.name for m in pkgutil.walk_packages(
    importlib.import_module(package).__path__, package + "."))
loaded = {}
for name in names:
    before = set(sys.modules)
    importlib.import_module(name)
    new = sorted(m for m in set(sys.modules) - before
                 if any(m == f or m.startswith(f + ".") for f in forbidden))
    if new:
        loaded[name] = new
print(json.dumps({"modules": names, "loaded": loaded}))
"""


def probe(package: str, *forbidden: str) -> tuple[list[str], dict[str, list[str]]]:
    """The modules of ``package``, and for each import that loaded ``forbidden`` modules,
    which ones (in a fresh subprocess: nothing this test session imported counts)."""
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, package, ",".join(forbidden)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    doc = json.loads(out)
    return doc["modules"], doc["loaded"]


def test_no_audit_module_loads_the_worker() -> None:
    modules, loaded = probe("decision_audit.audit", "decision_audit.worker")
    tools = {"verify", "trace", "report", "gate", "reconcile", "erasure", "witness"}
    assert {f"decision_audit.audit.{t}" for t in tools} <= set(modules)
    assert loaded == {}, f"audit modules that load the worker: {loaded}"


def test_the_contract_loads_neither_side() -> None:
    modules, loaded = probe(
        "decision_audit.contract",
        "decision_audit.producer",
        "decision_audit.worker",
        "decision_audit.audit",
        "decision_audit.clickhouse",
        "decision_audit.cli",
    )
    assert "decision_audit.contract.promotion" in modules
    assert loaded == {}, f"contract modules that load a side: {loaded}"


def test_the_probe_sees_a_worker_import() -> None:
    """The same probe on a package whose modules do load the worker reports them, so the
    tests above cannot pass for want of looking."""
    _, loaded = probe("decision_audit.devtools", "decision_audit.worker")
    assert "decision_audit.worker.loop" in loaded["decision_audit.devtools.demo"]
