"""Benchmarks of the decision audit trail (issue 5): ``python -m bench [--quick]``."""
