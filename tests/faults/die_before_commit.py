"""``decision-audit`` whose worker kills itself (SIGKILL) just before its N-th offset commit.

Fault injection for the worst moment of a crash: the batch is stored, its offsets are not
committed. Usage: ``python -m tests.faults.die_before_commit N worker --flags...``.
"""

from __future__ import annotations

import os
import signal
import sys

from decision_audit.cli.main import main
from decision_audit.worker.loop import Received, Worker

_commit = Worker._commit
_left = int(sys.argv.pop(1))


def _dying_commit(self: Worker, messages: list[Received]) -> None:
    global _left
    _left -= 1
    if _left <= 0:
        os.kill(os.getpid(), signal.SIGKILL)
    _commit(self, messages)


Worker._commit = _dying_commit  # type: ignore[method-assign]

if __name__ == "__main__":
    main()
