"""The replay engine: execute a workload's steps against a store and count what each lookup got.

A lookup picks the best donor among cached entries exactly as ``TensorCache`` does (``Catalog.find``:
longest unbroken run of matching layers from layer 0, or in ``compatible`` mode the most matching layers;
then the recorded parent, then the better score). An insert admits one entry per layer, in layer order,
evicting the policy's victims until the entry fits, as the cache's memory tier does; an entry larger
than the whole capacity is not admitted. Everything a step needs is prepared once per workload, so the
loop only moves prepared events between the store, the catalog and the counters.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from ..catalog import Catalog
from ..metrics import positional
from .report import ReplayResult, Served
from .schedule import Step, build_schedule
from .stores import PolicyStore, Store, UnboundedStore

if TYPE_CHECKING:
    from .trace import Evaluation
    from .workload import Workload

PROGRESS_EVERY = 1000  # events between two progress calls


def run(workload: Workload, store: Store, name: str, capacity_bytes: int = 0, population_size: int = 1,
        sample_size: int = 1, progress: Callable[[int, int], None] | None = None,
        inflight: bool = False) -> ReplayResult:
    """Drive ``store`` through the workload's steps (``schedule``) with population P and sample S; the
    yields are measured against ``workload.unbounded``. ``progress(done, total)`` hears how many events
    are done every ``PROGRESS_EVERY`` events and at the end; ``inflight``: each child is described at its
    lookup, as a driver that tells its cache about the children it issues does."""
    result = execute(workload, workload.steps(population_size, sample_size, inflight), store, name,
                     capacity_bytes, progress)
    return result.against(workload.unbounded)


def reference(workload: Workload) -> ReplayResult:
    """The unbounded replay (its own reference: every yield 1)."""
    result = execute(workload, build_schedule(workload, news=False), UnboundedStore(), "unbounded", 0, None)
    return result.against(result)


def execute(workload: Workload, steps: Sequence[Step], store: Store, name: str, capacity_bytes: int,
            progress: Callable[[int, int], None] | None) -> ReplayResult:
    """The loop: news before, insert or lookup, news after, for every step; the served counters."""
    catalog = Catalog()
    hold, release = catalog.hold, catalog.release
    handle, insert = store.handle, store.insert
    mode, models = workload.mode, workload.models
    served: list[Served] = []
    lookups = hits = lookups_served = entries = requested = 0
    transfer_bytes_served = revisit_bytes_served = 0
    transfer_value = revisit_value = 0.0
    total = len(steps)
    for start in range(0, total, PROGRESS_EVERY):
        if progress is not None:
            progress(start, total)
        for insert_step, model, before, after in steps[start:start + PROGRESS_EVERY]:
            for event in before:
                handle(event)
            if insert_step:
                record = model.record
                for index, event in enumerate(model.inserts):
                    admitted, evicted = insert(event)
                    for victim in evicted:
                        release(victim, 0)
                    if admitted:
                        hold(record, index, 0)
                for event in after:
                    handle(event)
                continue
            e = model.evaluation
            lookups += 1
            requested += model.nbytes
            found = _donor(catalog, store, e, mode)
            if found is None:
                served.append(Served(e.model_id, None, (), 0))
                continue
            donor, pairs = found
            got = models[donor]
            layers = [j for _, j in pairs]
            for j in layers:
                handle(got.hits[j])
            handle(got.donated)
            sizes, deps = got.evaluation.sizes, got.deps
            nbytes = sum([sizes[j] for j in layers])
            values = model.values
            value = sum([values[c] for c, _ in pairs])
            served.append(Served(e.model_id, donor, tuple(pairs), nbytes, value))
            lookups_served += 1
            hits += positional([deps[j] for j in layers])
            entries += len(layers)
            if model.revisit:
                revisit_bytes_served += nbytes
                revisit_value += value
            else:
                transfer_bytes_served += nbytes
                transfer_value += value
    if progress is not None:
        progress(total, total)
    result = ReplayResult(name, capacity_bytes, lookups=lookups, hits=hits, lookups_served=lookups_served,
                          bytes_served=transfer_bytes_served + revisit_bytes_served,
                          transfer_bytes_served=transfer_bytes_served, revisit_bytes_served=revisit_bytes_served, bytes_requested=requested, entries_served=entries,
                          transfer_value_served=transfer_value, revisit_value_served=revisit_value,
                          served=served)
    if isinstance(store, PolicyStore):
        result.evictions, result.max_used_bytes = store.evictions, store.max_used
    return result


def _donor(catalog: Catalog, store: Store, e: Evaluation, mode: str) -> tuple[str, list[tuple[int, int]]] | None:
    """``Catalog.find``'s donor and pairs for ``e`` (None: a miss), after forgetting the entries the store
    lost on its own."""
    while True:
        found = catalog.find(e.keys, e.parent_id, mode)
        if found is None:
            return None
        lost = store.missing(found[0], [j for _, j in found[1]])
        if not lost:
            return found
        for j in lost:
            catalog.release((found[0], j), 0)
