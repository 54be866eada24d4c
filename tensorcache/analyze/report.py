"""The markdown report: verdicts first, then every number by question with its plots."""
from __future__ import annotations

from collections.abc import Sequence

from ..fidelity import describe, fidelity
from .base import SECTIONS, Finding, RunFacts, Trace, plural


PLOTS = {"Structure": ["mutation_positions.png", "shared_prefix.png"],
         "Distribution": ["worker_timeline.png", "reuse_distance.png"],
         "Popularity": ["donor_popularity.png"], "Quality": ["quality.png"]}
QUESTIONS = {
    "Structure": "How does the architecture of the candidates evolve?",
    "Distribution": "How do evolution patterns look across distributed workers?",
    "Popularity": "When do candidates become popular donors, and for how long?",
    "Quality": "How does the quality of candidates change during the search?",
}


def render(tr: Trace, findings: Sequence[Finding], window: int, title: str, facts: RunFacts) -> str:
    """The markdown report: a verdict per study finding first, then every number by question."""
    span = max(r.t_end for r in tr.records) - min(r.t_start for r in tr.records)
    operator = "uniform over positions" if not facts.mutation_bias else \
        f"position i drawn with weight (i+1)^{facts.mutation_bias:g}"
    lines = [f"# Search trace analysis: {title}", "",
             f"{plural(len(tr.records), 'evaluation')} ({len(tr.children)} mutated children), "
             f"{plural(len(tr.workers), 'worker')}, span {span:.4g} time units, population P = {tr.P}, "
             f"popularity window {window} evaluations, mutation operator: one position, {operator}. "
             "Study: Underwood, Madhyastha, Burns, Nicolae, *Understanding Patterns of Deep Learning Model Evolution "
             "in Network Architecture Search* (2023); its summary states findings in words, not numbers.", "",
             "## Verdicts", "", "| study's finding | this trace | baseline | verdict | why |", "| --- | --- | --- | --- | --- |"]
    for f in findings:
        if f.verdict:
            base = "" if f.baseline is None else f.text(f.baseline)
            lines.append(f"| {f.study} | {f.text()} | {base} | **{f.verdict}** | {f.reason} |")
    lines.append("")
    lines += _fidelity(facts)
    for n, section in enumerate(SECTIONS, 1):
        lines += [f"## {n}. {section}", "", QUESTIONS[section], "", "| finding | this trace | baseline | verdict |",
                  "| --- | --- | --- | --- |"]
        for f in (f for f in findings if f.section == section):
            base = "" if f.baseline is None else f.text(f.baseline)
            lines.append(f"| {f.label} | {f.text()} | {base} | {f.verdict} |")
        lines += [""] + [f"![{p}]({p})" for p in PLOTS[section]] + [""]
    return "\n".join(lines)


def _fidelity(facts: RunFacts) -> list[str]:
    """The fidelity check's section: warm scores against the control set's scratch retrainings."""
    f = fidelity(facts.controls)
    if not f["n"]:
        why = (f"The search ran with `--control {facts.control:g}`, yet no control record is beside the trace "
               "(controls.jsonl: too few of its children were warm-started for one to be drawn, or the file was "
               "removed)" if facts.control else
               "No control set (run the search with `run_search --control F` to train a fraction F of warm-started "
               "children from scratch as well)")
        return ["## Fidelity of warm-started scores", "",
                f"{why}: the scores of warm-started children include training inherited from their donors, and this "
                "trace alone cannot say by how much that moves them.", ""]
    return ["## Fidelity of warm-started scores", "", describe(f) + ".", "",
            "Warm minus scratch is what inherited training adds to a child's score (95% bootstrap interval over the "
            "control set). Kendall's tau compares the ranking by warm scores with the ranking by scratch scores; the "
            "ceiling is tau between two scratch trainings with different initialisations: no single training's "
            "score ranks better than that.", ""]


def findings_dict(findings: Sequence[Finding]) -> dict[str, float]:
    """``{key: value}`` of every finding."""
    return {f.key: f.value for f in findings}
