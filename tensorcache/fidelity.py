"""Fidelity of warm-started scores: a search's control set, retrained from scratch, against the warm scores.

``run_search --control F`` trains a random fraction F of its warm-started children from scratch as well,
twice (``scratch_seed`` 0: the child's own initialisation, 1: another one), and writes those trainings to
``controls.jsonl`` beside the trace (each with ``scratch_of``, ``scratch_seed``, ``purpose`` and the
child's ``warm_score``). The *bias* is the mean of warm minus scratch scores (what inherited training adds);
Kendall's tau of warm against scratch says whether warm scores rank architectures as scratch training does,
and tau of the two scratch seeds is its noise ceiling: no score of one training can rank better than that.
"""
from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .trace import read_trace

CONTROLS = "controls.jsonl"


def kendall_tau(a: Sequence[float], b: Sequence[float]) -> float:
    """Kendall's tau-b of two paired score lists (NaN with fewer than two pairs or no untied pair)."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(x) < 2:
        return float("nan")
    i, j = np.triu_indices(len(x), 1)
    dx, dy = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
    denom = np.sqrt(np.count_nonzero(dx) * np.count_nonzero(dy))
    return float((dx * dy).sum() / denom) if denom else float("nan")


def bootstrap_mean(values: Sequence[float], reps: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """Mean and 95% percentile bootstrap interval of the mean (NaNs without values)."""
    v = np.asarray(values, dtype=float)
    if len(v) == 0:
        return (float("nan"),) * 3
    means = v[np.random.default_rng(seed).integers(0, len(v), size=(reps, len(v)))].mean(axis=1)
    return float(v.mean()), float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def fidelity(controls: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The control set's figures: n, bias [95% CI], tau warm vs scratch, tau scratch vs scratch (ceiling)."""
    by_seed: dict[int, dict[str, float]] = {0: {}, 1: {}}
    warm: dict[str, float] = {}
    for r in controls:
        if r.get("purpose") != "control" or r.get("scratch_seed") not in by_seed or r.get("score") is None:
            continue
        by_seed[r["scratch_seed"]][r["scratch_of"]] = float(r["score"])
        warm[r["scratch_of"]] = float(r["warm_score"])
    first = sorted(by_seed[0])
    both = sorted(set(first) & set(by_seed[1]))
    bias = bootstrap_mean([warm[m] - by_seed[0][m] for m in first])
    return {"n": len(first), "bias": bias,
            "tau_warm_scratch": kendall_tau([warm[m] for m in first], [by_seed[0][m] for m in first]),
            "tau_ceiling": kendall_tau([by_seed[0][m] for m in both], [by_seed[1][m] for m in both]),
            "n_ceiling": len(both)}


def describe(f: Mapping[str, Any]) -> str:
    """One line: the control set's bias and taus, for the progress bar, the summary and the report."""
    if not f["n"]:
        return "no control yet"
    b = f["bias"]

    def tau(value: float) -> str:  # undefined with fewer than two controls or only ties
        return "n/a" if math.isnan(value) else f"{value:.2f}"

    return (f"{f['n']} controls: warm - scratch {b[0]:+.2f} [{b[1]:+.2f}, {b[2]:+.2f}], "
            f"tau {tau(f['tau_warm_scratch'])} "
            f"(ceiling {tau(f['tau_ceiling'])}, {f['n_ceiling']} with a second seed)")


def read_controls(trace_path: str | os.PathLike) -> list[dict[str, Any]]:
    """The control records written beside a trace ([] when the search kept none)."""
    path = os.path.join(os.path.dirname(os.fspath(trace_path)), CONTROLS)
    return read_trace(path) if os.path.exists(path) else []
