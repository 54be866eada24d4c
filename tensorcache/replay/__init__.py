"""Replay a recorded search under any eviction policy and cache size, offline and deterministic.

The parts, joined by ``replay``: ``trace`` reads trace records into Evaluations; ``workload`` merges them
into one event stream (inserts at t_end, lookups at t_start, inserts first at equal times) and prepares
each model once; ``schedule`` decides which policy events each step carries; ``engine`` runs the steps
against a ``stores`` Store (one policy's byte budget, or the unbounded reference); ``report`` holds the
counters and yields; ``stream`` is the request stream Belady's next uses are counted on.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..config import deprecated_options
from ..policies import Policy, make_policy
from .engine import run
from .report import ReplayResult, Served
from .schedule import Step, build_schedule
from .stores import PolicyStore, Store, UnboundedStore
from .trace import Evaluation, infer_population_size, parse_records, trace_settings
from .workload import Event, Model, Workload, merge_events, population_params

__all__ = ["build_schedule", "Evaluation", "Event", "Model", "PolicyStore", "ReplayResult", "Served", "Step", "Store",
           "UnboundedStore", "Workload", "infer_population_size", "merge_events", "parse_records",
           "population_params", "replay", "run", "trace_settings"]


def replay(records: Sequence[Mapping[str, Any]] | Workload, policy: str | Policy, capacity_bytes: int,
           mode: str = "prefix", population_size: int | None = None, sample_size: int | None = None,
           policy_options: Mapping[str, Any] | None = None,
           progress: Callable[[int, int], None] | None = None, inflight: bool = False,
           policy_kwargs: Mapping[str, Any] | None = None) -> ReplayResult:
    """Re-run a trace's lookups and inserts under ``policy`` with ``capacity_bytes``.

    ``policy`` is a name for ``make_policy`` (``"belady"`` gets the trace's next uses) or a Policy object.
    P and S feed population-aware policies; P defaults to ``infer_population_size``, S to max(1, P // 4).
    ``policy_kwargs`` is the deprecated name of ``policy_options``.
    """
    workload = records if isinstance(records, Workload) else Workload(records, mode)
    P, S = population_params(workload, population_size, sample_size)
    if policy_kwargs is not None:
        policy_options = deprecated_options(policy_kwargs, policy_options)
    if isinstance(policy, str):
        kw = dict(policy_options or {})
        if policy == "belady":
            kw.setdefault("next_uses", workload.next_uses())
        policy = make_policy(policy, **kw)
    return run(workload, PolicyStore(policy, capacity_bytes), policy.name, capacity_bytes, P, S, progress, inflight)
