"""``python -m decision_audit``: the command line (as the ``decision-audit`` command)."""

from decision_audit.cli import main

main()
