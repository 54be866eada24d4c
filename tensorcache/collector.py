"""Python's cyclic garbage collector, paced for what the cache builds and keeps.

A cache opening on a shared store of 10^4 models builds about 10^6 long-lived objects at once, and the
collector, run as usual, walks the growing heap many times while they are made (about a third of the open's
CPU) and frees nothing; ``collector_paused`` keeps it from running for that block, then moves what the block
made to the oldest generation, so that no young collection walks them all once it runs again.

A search keeps millions of small long-lived objects (model records, catalog entries, policy heaps), and each
full collection walks all of them: in a 10^5-evaluation tabular search full collections took 0.5-0.8 ms of
every evaluation (about a tenth of its cost) and freed nothing, since the cache and the driver make no
reference cycles. While a search runs (and in its worker processes), the driver keeps the young
generations' collections as they are and runs full collections ``factor`` times less often; the user's
thresholds come back when it ends.
"""
from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def collector_paused() -> Iterator[None]:
    """Inside the block the cyclic collector does not run (it runs again after, if it ran before); the objects
    tracked when it ends are moved to the oldest generation, as if they had survived the young collections."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            if not gc.get_freeze_count():  # (objects frozen by the caller stay frozen)
                gc.freeze()  # what the block made joins the oldest generation at once, which only full
                gc.unfreeze()  # collections walk: no young collection walks 10^6 objects first (about 0.3 s)
            gc.enable()


@contextmanager
def fewer_full_collections(factor: int = 10) -> Iterator[None]:
    """Inside the block, a full collection needs ``factor`` times as many younger collections as before."""
    if isinstance(factor, bool) or not isinstance(factor, int) or factor < 1:
        raise ValueError(f"factor must be an int >= 1, got {factor!r}")
    before = gc.get_threshold()
    gc.set_threshold(before[0], before[1], max(1, before[2]) * factor)
    try:
        yield
    finally:
        gc.set_threshold(*before)
