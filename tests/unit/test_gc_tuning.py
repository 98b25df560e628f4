"""The worker's GC pace applies inside the block only."""

from __future__ import annotations

import gc

import pytest

from consumers.gc_tuning import GC_THRESHOLD, tuned_gc


def test_the_threshold_applies_inside_and_is_restored_after() -> None:
    before = gc.get_threshold()
    assert before != GC_THRESHOLD
    with tuned_gc():
        assert gc.get_threshold() == GC_THRESHOLD
    assert gc.get_threshold() == before


def test_the_threshold_is_restored_when_the_block_raises() -> None:
    before = gc.get_threshold()
    with pytest.raises(RuntimeError), tuned_gc():
        raise RuntimeError("worker failed")
    assert gc.get_threshold() == before
