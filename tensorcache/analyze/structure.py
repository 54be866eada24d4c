"""Question 1, structure: where mutations land and what a child could take from its parent under each rule."""
from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..layers import MODES, LayerMap
from ..metrics import summarize_records
from .base import (AGREES, BY_CONSTRUCTION, DIFFERS, NOT_MEASURABLE, Finding, LayerSource, RunFacts, Trace,
                   mean_or_nan)
from .plots import bar_plot, hist_plot


def shared_prefix(a: Sequence[Any], b: Sequence[Any]) -> int:
    """Length of the common leading run of two sequences."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def generic_layers(arch: Sequence[int], mode: str) -> tuple[LayerMap, list[int]]:
    """One layer per position, depending on the prefix up to it (either rule), each counted as one byte."""
    return LayerMap.generic(len(arch), mode), [1] * len(arch)


def transferable(child: Sequence[int], parent: Sequence[int], mode: str,
                 layers: LayerSource) -> tuple[float, float]:
    """(share of layers, share of bytes) of ``child`` that ``parent`` can give under rule ``mode``."""
    cmap, sizes = layers(child, mode)
    pmap, _ = layers(parent, mode)
    own, theirs = cmap.keys("analyze", child), pmap.keys("analyze", parent)
    if mode == "prefix":
        keep = [i < shared_prefix(own, theirs) for i in range(len(own))]
    else:
        have = set(theirs)
        keep = [k in have for k in own]
    total = sum(sizes) or 1
    return sum(keep) / max(1, len(own)), sum(b for k, b in zip(keep, sizes) if k) / total


def operator_middle_share(n: int, bias: float) -> float:
    """Share of the middle third (position / (n - 1) in [1/3, 2/3]) under the driver's mutation operator, which
    draws position q with weight (q + 1) ** bias (0: uniformly)."""
    if n <= 1:
        return 1.0
    w = np.arange(1, n + 1, dtype=float) ** bias
    middle = np.array([1 / 3 <= q / (n - 1) <= 2 / 3 for q in range(n)])
    return float(w[middle].sum() / w.sum())


def middle_third_verdict(share: float, null: float, uniform: float, n: int, bias: float) -> tuple[str, str]:
    """Is the middle third hit more often than the driver's operator itself draws it (two standard errors)?
    Where the trace matches the operator, the finding is the operator's: it holds (or fails) by construction."""
    operator = ("draws positions uniformly (mutation bias 0)" if not bias else
                f"draws position i with weight (i+1)^{bias:g}")
    if n < 20:
        return NOT_MEASURABLE, f"{n} mutations are too few to tell; null: the driver's operator, which {operator}"
    se = math.sqrt(null * (1 - null) / n) or 1e-9
    z = (share - null) / se
    against = f"{share:.1%} against {null:.1%} under the null (the driver's operator, which {operator}; {z:+.1f} s.e.)"
    if z > 2:
        return AGREES, f"{against}: more than the operator draws"
    if z < -2:
        return DIFFERS, f"{against}: fewer than the operator draws"
    if null > uniform + 2 * se:
        return BY_CONSTRUCTION, f"{against}: the operator itself favours the middle third"
    return DIFFERS, (f"{against}: the operator gives the middle third its share of positions ({uniform:.1%}), so "
                     "mid-sequence concentration is false by construction here")


def structure(tr: Trace, out: str | os.PathLike, facts: RunFacts) -> list[Finding]:
    """Mutation positions, shared prefix with the parent, and what a child could inherit under each rule."""
    S = "Structure"
    layers = facts.layers or generic_layers
    muts = [(r.mutation_pos, len(r.arch)) for r in tr.records if r.mutation_pos is not None]
    rel = np.array([p / (n - 1) if n > 1 else 0.5 for p, n in muts])
    uniform = mean_or_nan(np.array([np.mean([1 / 3 <= q / (n - 1) <= 2 / 3 for q in range(n)]) if n > 1 else 1.0
                              for _, n in muts]))
    share = mean_or_nan(((rel >= 1 / 3) & (rel <= 2 / 3)).astype(float))
    prefix = np.array([shared_prefix(r.arch, tr.parent(r).arch) for r in tr.children])
    rules = {mode: np.array([transferable(r.arch, tr.parent(r).arch, mode, layers) for r in tr.children],
                            float).reshape(-1, 2) for mode in MODES}
    actual = np.array([r.bytes_served / (sum(r.layer_bytes) or 1) for r in tr.children])
    live = summarize_records(tr.records, facts.transfer)
    n_pos = max((n for _, n in muts), default=max(len(r.arch) for r in tr.records))
    hist = np.bincount([p for p, _ in muts], minlength=n_pos) if muts else np.zeros(n_pos, int)
    bar_plot(out, "mutation_positions.png", range(n_pos), hist, "mutation position", "children",
         "Where mutations land")
    hist_plot(out, "shared_prefix.png", [prefix, rules["prefix"][:, 1], rules["compatible"][:, 1]],
          ["positions shared with the parent", "fraction of the child's bytes", "fraction of the child's bytes"],
          integer_x=[True, False, False], titles=["Shared prefix with the parent", "Transferable, prefix rule",
                                                  "Transferable, compatible rule"], ylabel="children")
    null = mean_or_nan(np.array([operator_middle_share(n, facts.mutation_bias) for _, n in muts]))
    verdict, reason = middle_third_verdict(share, null, uniform, len(muts), facts.mutation_bias)
    pre = mean_or_nan(rules["prefix"][:, 1])
    limited = (NOT_MEASURABLE, "no mutated children") if math.isnan(pre) else (
        (AGREES, f"under the prefix rule a child can take {pre:.1%} of its bytes from its parent: a mutation at "
                 "position p invalidates every layer that depends on positions >= p") if pre < 0.5 else
        (DIFFERS, f"under the prefix rule a child can take {pre:.1%} of its bytes from its parent"))
    source = facts.layers_source or "generic layer map: one layer per position, each counted as one byte"
    return [
        Finding(S, "mutations", "children with a recorded mutation", len(muts), "{:.0f}"),
        Finding(S, "middle_third_share", "share of mutations in the middle third of the sequence "
                "(position / (length - 1) in [1/3, 2/3]; baseline: the driver's mutation operator)", share, "{:.1%}", null,
                verdict, reason),
        Finding(S, "mean_relative_position", "mean mutation position / (length - 1)", mean_or_nan(rel), "{:.2f}"),
        Finding(S, "shared_prefix_mean", "mean shared prefix with the parent (positions)", mean_or_nan(prefix), "{:.2f}"),
        Finding(S, "layers_transferable_prefix", f"mean share of layers transferable from the parent, prefix rule "
                f"({source})", mean_or_nan(rules["prefix"][:, 0]), "{:.1%}"),
        Finding(S, "bytes_transferable_prefix", "mean share of bytes transferable from the parent, prefix rule",
                pre, "{:.1%}", None, *limited),
        Finding(S, "layers_transferable_compatible", "mean share of layers transferable from the parent, "
                "compatible rule (a layer whose own positions agree)", mean_or_nan(rules["compatible"][:, 0]), "{:.1%}"),
        Finding(S, "bytes_transferable_compatible", "mean share of bytes transferable from the parent, "
                "compatible rule", mean_or_nan(rules["compatible"][:, 1]), "{:.1%}"),
        Finding(S, "bytes_transferred", "mean share of bytes the recorded run actually transferred (its own rule, "
                "from any cached donor)", mean_or_nan(actual), "{:.1%}"),
        Finding(S, "hit_ratio", "evaluations served a layer that depends on a position (a hit, "
                "tensorcache.metrics)", live.hit_ratio, "{:.1%}"),
        Finding(S, "repeated_arch_share", "evaluations of an architecture that an earlier evaluation already had",
                live.revisit_fraction, "{:.1%}"),
    ]
