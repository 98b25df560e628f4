"""``decision-audit`` whose worker kills itself (SIGKILL) just before its N-th offset commit.

Fault injection for the worst moment of a crash: the batch is stored, its offsets are not
committed. Usage: ``python -m tests.faults.die_before_commit N worker --flags...``.
"""

from __future__ import annotations

import os
import signal
import sys

from confluent_kafka import Consumer

from decision_audit.cli.main import main
from decision_audit.worker import loop
from decision_audit.worker.received import Received

_commit = loop.commit_stored
_left = int(sys.argv.pop(1))


def _dying_commit(consumer: Consumer, messages: list[Received]) -> None:
    global _left
    _left -= 1
    if _left <= 0:
        os.kill(os.getpid(), signal.SIGKILL)
    _commit(consumer, messages)


loop.commit_stored = _dying_commit

if __name__ == "__main__":
    main()
