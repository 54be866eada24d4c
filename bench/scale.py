"""Does the cache's cost per evaluation stay flat as a search grows, and are its tiers whole at the end?

    python bench/scale.py [--table CSV] [--evals 10000 100000] [--workers 10000] [--out DIR]

Tabular NB201 searches (``run_search --evaluator tabular``, simulated workers, memory + LMDB tiers at their
defaults, synthetic tensors of 1/64 the real layer sizes) of each size in ``--evals``. The cost of one
evaluation is the run_search call's seconds over its evaluations; the ratio printed is that of the smallest
search over each larger one (1.0: flat; the target is >= 1/1.3). With as many workers as evaluations every
child of the smaller search is random and nothing is served, so the fair measure of "flat in history" is
within the largest search: its cost per evaluation in successive windows of ``--window`` evaluations (wall
time between the window's first and last finished record), and the ratio of the first window that served
at least half its children to the last window of the search and to the slowest window after it (1.0: flat;
target >= 1/1.3). Every window after the first serving one counts, the search's last ``--workers``
evaluations too (no child starts there, so they pay for puts without lookups). Each window also prints the
CPU time this process spent (``time.process_time``), which other jobs on a shared machine inflate less than
wall time, and the wall time spent inside the cache's lookups and puts (the rest is the simulated search
itself: breeding, placement, synthetic tensors, the trace; a lookup counts in the window its evaluation
finishes in, so in the last window, which only drains, it can exceed the window's own time). Each window
also splits that time by what the cache did for each evaluation (served it from memory, from LMDB, or not:
their costs differ several-fold), and ``diagnostic`` lines compare the first serving window with the slowest
later one within each kind: whether the cache's calls grow with the search's history, apart from the
window's mix of hits and misses (the target is the per-evaluation ratio above). After each
search its LMDB file is opened
again and checked: no dropped puts for want of map space, the books need no repair, used bytes equal to the
payloads held, and the catalog and policies agree (``TensorCache.check_invariants``).

Writes DIR/scale.csv and DIR/scale.json.
"""
from __future__ import annotations

import argparse
import gc
import logging
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any

from common import exit_status, machine, write_results
from nas_integration.data import nb201_table

from nas_integration.search import SearchSettings, Tally, run_search
from tensorcache import TensorCache
from tensorcache.cli import dashed_values, positive_int
from tensorcache.trace import TraceRecord, read_records

FLAT = 1.3


class _Repairs(logging.Handler):
    """Counts the warnings that say a tier's books had to be rebuilt."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += "rebuilt its books" in record.getMessage()


class _Collector:
    """CPU time and number of the cyclic collector's young (generations 0 and 1) and full collections (a
    ``gc.callbacks`` probe: the time between each collection's start and stop)."""

    def __init__(self) -> None:
        self.seconds, self.runs = [0.0, 0.0], [0, 0]
        self._start = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._start = time.process_time()
            return
        full = info["generation"] == 2
        self.seconds[full] += time.process_time() - self._start
        self.runs[full] += 1

    def totals(self) -> tuple[float, float, int, int]:
        return (*self.seconds, *self.runs)


class _Windows:
    """Wall time, time in the cache, hits and collector time of each run of ``size`` finished evaluations (a
    ``run_search`` progress callback)."""

    def __init__(self, size: int, collector: _Collector) -> None:
        self.size = size
        self.rows: list[dict[str, Any]] = []
        self._collector = collector
        self._start, self._cpu, self._hits, self._cache = time.perf_counter(), time.process_time(), 0, 0.0
        self._gc = collector.totals()

    def __call__(self, tally: Tally, dropped: int) -> None:
        if tally.evaluations % self.size:
            return
        now, cpu = time.perf_counter(), time.process_time()
        self.rows.append({"until": tally.evaluations, "ms_per_eval": 1e3 * (now - self._start) / self.size,
                          "cpu_ms_per_eval": 1e3 * (cpu - self._cpu) / self.size,
                          "cache_ms_per_eval": 1e3 * (tally.cache_s - self._cache) / self.size,
                          "hits": tally.hits - self._hits})
        gc_now = self._collector.totals()
        young_s, full_s, young, full = (a - b for a, b in zip(gc_now, self._gc))
        self.rows[-1].update(young_gc_ms_per_eval=1e3 * young_s / self.size,
                             full_gc_ms_per_eval=1e3 * full_s / self.size, young_gcs=young, full_gcs=full)
        self._start, self._cpu, self._hits, self._cache, self._gc = now, cpu, tally.hits, tally.cache_s, gc_now


def _kind(record: TraceRecord) -> str | None:
    """What the cache did for an evaluation: served it from a tier (that tier's name), or not (``unserved``);
    None for one that made no cache call (a revisit answered from the trace)."""
    if record.layers_served:
        return record.tier or "unknown"
    return "unserved" if record.cache_s else None


def per_kind(records: Sequence[TraceRecord], size: int) -> list[dict[str, list[float]]]:
    """For each window of ``size`` evaluations in finishing order: kind -> [evaluations, mean ms in the cache]
    (its lookup, warm start and put), so that a window's cost can be told apart from its mix of hits by tier
    and misses."""
    out: list[dict[str, list[float]]] = []
    for start in range(0, len(records) - len(records) % size, size):
        sums: dict[str, list[float]] = {}
        for record in records[start:start + size]:
            kind = _kind(record)
            if kind is not None:
                entry = sums.setdefault(kind, [0, 0.0])
                entry[0] += 1
                entry[1] += record.cache_s
        out.append({kind: [n, 1e3 * total / n] for kind, (n, total) in sorted(sums.items())})
    return out


def one_search(table: str, workdir: str, evals: int, workers: int, window: int) -> dict[str, Any]:
    out = os.path.join(workdir, f"s{evals}")
    settings = SearchSettings(out=out, evaluator="tabular", table=table, space="nb201", dataset="cifar10",
                              evals=evals, workers=workers, seed=0, transfer="prefix")  # as its results were measured
    collector = _Collector()
    windows = _Windows(window, collector)
    gc.callbacks.append(collector)
    t0, cpu0 = time.perf_counter(), time.process_time()
    try:
        summary = run_search(settings, on_record=windows)
    finally:
        gc.callbacks.remove(collector)
    call_s, cpu_s = time.perf_counter() - t0, time.process_time() - cpu0
    for row, kinds in zip(windows.rows, per_kind(read_records(os.path.join(out, "trace.jsonl")), window)):
        row["cache_ms_by_kind"] = kinds
    stats = summary["cache"] or {}
    repairs = _Repairs()
    logging.getLogger("tensorcache").addHandler(repairs)
    try:
        reopened = TensorCache(memory=0, disk=os.path.join(out, "cache.lmdb"),
                               disk_capacity=stats["tiers"][0]["lmdb"]["capacity"],
                               namespace=summary["settings"]["cache_config"]["namespace"])
        problems = reopened.check_invariants()
        audit = reopened.tiers[0].audit()
        reopened.close()
    finally:
        logging.getLogger("tensorcache").removeHandler(repairs)
    return {"evaluations": summary["evaluations"], "workers": workers, "call_s": call_s, "cpu_s": cpu_s,
            "per_eval_ms": 1e3 * call_s / summary["evaluations"], "hit_ratio": summary["hit_ratio"],
            "dropped_puts": stats.get("dropped_puts"), "lmdb_used": audit.used, "lmdb_held": audit.held_bytes,
            "lmdb_orphans": audit.orphan_bytes, "repairs_on_reopen": repairs.count, "problems": len(problems),
            "healthy": not problems and audit.healthy and not repairs.count and not stats.get("dropped_puts"),
            "windows": windows.rows}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--table", default=str(nb201_table()), metavar="CSV")
    p.add_argument("--evals", type=positive_int, nargs="+", default=[10_000, 100_000])
    p.add_argument("--workers", type=positive_int, default=10_000)
    p.add_argument("--window", type=positive_int, default=10_000, help="evaluations per window of the largest search")
    p.add_argument("--out", metavar="DIR", default="runs/bench")
    args = p.parse_args(dashed_values(argv))
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as workdir:
        for evals in sorted(set(args.evals)):  # a size given twice is one search (each has its own folder)
            row = one_search(os.path.abspath(args.table), workdir, evals, args.workers, args.window)
            rows.append(row)
            print(f"  {row['evaluations']} evaluations on {args.workers} simulated workers: {row['call_s']:.1f} s "
                  f"({row['cpu_s']:.1f} s of this process's CPU), "
                  f"{row['per_eval_ms']:.2f} ms per evaluation, hit ratio {row['hit_ratio']:.1%}, dropped puts "
                  f"{row['dropped_puts']}, LMDB used {row['lmdb_used']} = held {row['lmdb_held']}, orphans "
                  f"{row['lmdb_orphans']}, healthy {row['healthy']}", flush=True)
    windows = {row["evaluations"]: row.pop("windows") for row in rows}
    longest = windows[rows[-1]["evaluations"]]
    for w in longest:
        print(f"    window to {w['until']}: {w['ms_per_eval']:.2f} ms per evaluation ({w['cpu_ms_per_eval']:.2f} ms "
              f"of this process's CPU; {w['cache_ms_per_eval']:.2f} ms in the cache's lookups and puts), "
              f"{w['hits']} hits; the collector's CPU: {w['young_gc_ms_per_eval']:.2f} ms in {w['young_gcs']} young "
              f"collections, {w['full_gc_ms_per_eval']:.2f} ms in {w['full_gcs']} full ones")
        print("      in the cache per evaluation: " + ", ".join(
            f"{kind} {ms:.2f} ms (x{n})" for kind, (n, ms) in w.get("cache_ms_by_kind", {}).items()))
    # from the first window serving at least half its children to the end of the search, the last
    # ``workers`` evaluations (which only drain: no child starts) included
    first = next((n for n, w in enumerate(longest) if 2 * w["hits"] >= args.window), len(longest))
    serving = longest[first:]
    for clock, field in (("", "ms_per_eval"), ("_cpu", "cpu_ms_per_eval")):
        if len(serving) > 1:
            slowest = max(serving[1:], key=lambda w: w[field])
            for name, later in (("last", serving[-1]), ("slowest", slowest)):
                ratio = serving[0][field] / later[field]
                print(f"ratio scale.window{clock}_{name}_vs_first_serving {ratio:7.3f}   {later[field]:.2f} ms (to "
                      f"{later['until']}) vs {serving[0][field]:.2f} ms (to {serving[0]['until']})  target >= "
                      f"{1 / FLAT:.2f}: {'met' if ratio >= 1 / FLAT else 'SHORT'}")
    # a diagnostic, not the target: the time in the cache within each kind of evaluation (served from a tier,
    # or not), which a window's mix of kinds does not move; windows with under 1% of that kind are left out
    for kind in sorted({k for w in serving for k in w.get("cache_ms_by_kind", {})}):
        ms = [(w["cache_ms_by_kind"][kind][1], w["until"]) for w in serving
              if w["cache_ms_by_kind"].get(kind, [0])[0] >= args.window // 100]
        if len(ms) > 1:
            slowest = max(ms[1:])
            print(f"diagnostic scale.cache_per_{kind}_slowest_vs_first {ms[0][0] / slowest[0]:7.3f}   "
                  f"{slowest[0]:.2f} ms (to {slowest[1]}) vs {ms[0][0]:.2f} ms (to {ms[0][1]})")
    base = rows[0]
    for row in rows[1:]:
        ratio = base["per_eval_ms"] / row["per_eval_ms"]
        verdict = "met" if ratio >= 1 / FLAT else "SHORT"
        if base["hit_ratio"] < 0.5:  # its children were mostly random: it paid for few lookups and transfers
            verdict = f"not like for like (the smaller search served {base['hit_ratio']:.0%} of its children)"
        print(f"ratio scale.per_eval_{row['evaluations']}_vs_{base['evaluations']} {ratio:7.3f}   "
              f"{row['per_eval_ms']:.2f} ms vs {base['per_eval_ms']:.2f} ms  target >= {1 / FLAT:.2f}: {verdict}")
    write_results(args.out, "scale", rows, machine(), windows)
    return 0


if __name__ == "__main__":
    sys.exit(exit_status(main))
