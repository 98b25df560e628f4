"""The root of every error decision-audit raises on purpose.

Each error also keeps the builtin base callers relied on before there was a root
(``ValueError`` for bad input, ``RuntimeError`` for a component that is unavailable or
failed, ``LookupError`` for something not found), so ``except ValueError`` still works.
"""

from __future__ import annotations


class DecisionAuditError(Exception):
    """Base class of decision-audit's errors: ``except DecisionAuditError`` catches them all."""
