"""The worker's GC pace applies while a worker runs, and only then."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from decision_audit.worker.gc_tuning import GC_THRESHOLD, tuned_gc

OWN = (1234, 11, 12)


@pytest.fixture(autouse=True)
def own_threshold() -> Iterator[None]:
    before = gc.get_threshold()
    gc.set_threshold(*OWN)
    try:
        yield
    finally:
        gc.set_threshold(*before)


def test_the_threshold_applies_inside_and_is_restored_after() -> None:
    with tuned_gc():
        assert gc.get_threshold() == GC_THRESHOLD
    assert gc.get_threshold() == OWN


def test_the_threshold_is_restored_when_the_block_raises() -> None:
    with pytest.raises(RuntimeError), tuned_gc():
        raise RuntimeError("worker failed")
    assert gc.get_threshold() == OWN


def test_overlapping_workers_restore_the_threshold_whatever_order_they_stop_in() -> None:
    first, second = tuned_gc(), tuned_gc()
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)  # the first to start stops first: still tuned
    assert gc.get_threshold() == GC_THRESHOLD
    second.__exit__(None, None, None)
    assert gc.get_threshold() == OWN
