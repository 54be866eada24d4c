"""``tensorcache analyze``: the study's four questions answered on a search trace, each with a verdict.

Underwood et al. (2023) ask how architectures evolve under regularized evolution (structure), how
evolution looks across distributed workers (distribution), when donors become and stop being popular
(popularity), and how model quality changes (quality). ``analyze`` computes each finding from the trace
(one record per evaluation, see ``tensorcache.trace``), sets it against a baseline where one exists
(uniform mutation positions, uniform donor choice, shuffled worker assignment) and says whether it agrees
with the study, differs, or cannot be measured on this trace, with a one-line reason. It writes
``report.md`` plus PNG plots that stay readable from 1 to 1024 workers.

Conventions: the *donor* of a child is its regularized-evolution parent; evaluations are numbered in start
order; the population at a time is the last P models finished by then (P from the caller, else inferred).
Transferable layers are computed from the architectures under each rule's own layer map (``layers``),
never from the layer keys the trace happened to record, so a prefix and a compatible trace agree.

Parts: ``base`` (findings, run facts, the indexed trace), one module per question (``structure``,
``distribution``, ``popularity``, ``quality``), ``plots`` (the figures) and ``report`` (the markdown).
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..trace import TraceRecord
from .base import LOW_QUANTILE, SECTIONS, STUDY, Finding, OnStep, RunFacts, Trace
from .distribution import distribution
from .popularity import popularity
from .quality import quality
from .report import PLOTS, findings_dict, render
from .structure import structure


def analyze(records: Sequence[TraceRecord | Mapping[str, Any]], out_dir: str | os.PathLike, facts: RunFacts | None = None,
            title: str = "trace", progress: OnStep | None = None) -> list[Finding]:
    """Write ``out_dir/report.md`` and its PNGs; return the findings. ``progress`` hears each step's name."""
    facts = facts or RunFacts()
    step = progress or (lambda name: None)
    os.makedirs(out_dir, exist_ok=True)
    step("reading the trace")
    tr = Trace(records, facts.population_size)
    if facts.sample_size is not None and not 1 <= facts.sample_size <= tr.P:
        raise ValueError(f"need 1 <= sample size <= population size, got S={facts.sample_size}, P={tr.P}")
    window = facts.window or tr.P
    rng = np.random.default_rng(0)
    findings: list[Finding] = []
    for name, run in (("structure", lambda: structure(tr, out_dir, facts)),
                      ("distribution", lambda: distribution(tr, out_dir, rng)),
                      ("popularity", lambda: popularity(tr, out_dir, window, rng, facts.sample_size)),
                      ("quality", lambda: quality(tr, out_dir, facts))):
        step(name)
        findings += run()
    step("report")
    with open(os.path.join(out_dir, "report.md"), "w", encoding="utf-8") as f:
        f.write(render(tr, findings, window, title, facts))
    return findings


STEPS = 6  # calls ``analyze`` makes to ``progress``


__all__ = ["LOW_QUANTILE", "PLOTS", "SECTIONS", "STEPS", "STUDY", "Finding", "RunFacts", "Trace", "analyze",
           "findings_dict"]
