"""Compare eviction policies on recorded search traces: ours and libCacheSim's, on the same stream.

    python bench/policy_compare.py TRACE... --capacities 1,2,5,10,20,50 --out DIR [--window-sweep 10,25,50,100]

Capacities are percent of all bytes the trace ever stores. Every policy sees the identical event stream
of ``tensorcache.replay`` (inserts at t_end, lookups at t_start). Two evaluations (bench/README.md):

* prefix-aware (transfer_yield, hit_ratio, byte_hit_ratio, object_hit_ratio): the policy decides what is
  cached, and each lookup serves the best single donor among cached entries as TensorCache does. Our
  policies run through ``replay``; a libCacheSim cache runs as the store itself: ``get`` admits each new
  entry and is called for every entry a lookup serves (a hit), ``find(update_cache=False)`` says what it
  still holds. Entries a lookup does not serve are never requested, so nothing evicted comes back.
* stream (stream_object_hit_ratio, stream_byte_hit_ratio): the exported object request stream played
  through each cache as a plain object cache (a miss admits), ratios over the lookup requests.

Writes DIR/policy_compare.csv, DIR/<trace>.png (yield vs capacity), and with --window-sweep
DIR/window_sweep.csv and DIR/window_sweep_<trace>.png (donor-window's W against yield).
"""
from __future__ import annotations

import argparse
import csv
import math
import os
import sys
from bisect import bisect_left
from collections.abc import Callable, Sequence
from typing import Any

import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from tensorcache.events import ClockMoved, LayerServed, PolicyEvent
from tensorcache.policies import make_policy
from tensorcache.replay import (
    Entry,
    ObjectRequest,
    PolicyStore,
    ReplayResult,
    Store,
    Workload,
    population_params,
    replay,
    run,
    trace_settings,
)
from tensorcache.trace import read_trace

OURS = ("fifo", "lru", "lfu", "donor-window", "evolution-aware", "belady")
# label -> libCacheSim class name; missing classes are skipped
LIBCACHESIM = {"LRU": "LRU", "ARC": "ARC", "LIRS": "LIRS", "TinyLFU": "WTinyLFU", "S3-FIFO": "S3FIFO",
               "SIEVE": "Sieve", "GDSF": "GDSF", "Belady": "Belady", "BeladySize": "BeladySize"}
# BeladySize scores objects by their distance to the next access measured on the cache's own request
# counter, which only matches the stream when every stream request is sent (stream mode).
STREAM_ONLY = {"BeladySize"}
NEVER = 2**63 - 1  # libCacheSim's "no next access"
COLUMNS = ("trace", "family", "policy", "capacity_pct", "capacity_bytes", "transfer_yield", "yield_vs_belady",
           "hit_ratio", "byte_hit_ratio", "object_hit_ratio", "stream_object_hit_ratio", "stream_byte_hit_ratio",
           "evictions", "max_used_bytes")


# ------------------------------------------------------------------------------------------ libCacheSim
def libcachesim_policies() -> dict[str, Callable[[int], Any]]:
    """label -> constructor taking the cache size in bytes, for the libCacheSim classes installed."""
    try:
        import libcachesim
    except ImportError:
        return {}
    return {label: getattr(libcachesim, cls) for label, cls in LIBCACHESIM.items() if hasattr(libcachesim, cls)}


def lcs_request(obj_id: int, size: int, next_access: int) -> Any:
    import libcachesim

    req = libcachesim.Request()
    req.obj_id, req.obj_size, req.next_access_vtime, req.valid = obj_id, size, next_access, True
    return req


class LibCacheSimStore(Store):
    """A libCacheSim cache as replay's store: it admits and evicts on its own, replay asks what it holds."""

    exact = False

    def __init__(self, cache: Any, capacity: int, ids: dict[Entry, int], uses: dict[Entry, list[int]]) -> None:
        self.cache, self.capacity, self.ids, self.uses = cache, capacity, ids, uses
        self.sizes: dict[Entry, int] = {}
        self.end = 0

    def _req(self, entry: Entry) -> Any:
        uses = self.uses.get(entry, ())
        i = bisect_left(uses, self.end)  # the next use after the current event
        return lcs_request(self.ids[entry], self.sizes[entry], uses[i] if i < len(uses) else NEVER)

    def contains(self, entry: Entry) -> bool:
        return entry in self.sizes and self.cache.find(self._req(entry), False) is not None

    def insert(self, entry: Entry, size: int, model_id: str, deps: tuple[int, ...]) -> tuple[bool, list[Entry]]:
        if size > self.capacity:  # libCacheSim would refuse it too, with a warning per request
            return False, []
        self.sizes[entry] = size
        self.cache.get(self._req(entry))
        return self.contains(entry), []

    def handle(self, event: PolicyEvent) -> None:
        if isinstance(event, LayerServed):
            self.cache.get(self._req(event.key))
        elif isinstance(event, ClockMoved):
            self.end = event.end


# -------------------------------------------------------------------------------------------- stream mode
def stream_ratios(requests: Sequence[ObjectRequest], get: Callable[[int, ObjectRequest], bool]) -> tuple[float, float]:
    """(object, byte) hit ratio over the lookup requests when ``get(position, request)`` plays the stream."""
    hits = hit_bytes = n = total = 0
    for i, r in enumerate(requests):
        hit = get(i, r)
        if not r.insert:
            n += 1
            total += r.size
            hits += hit
            hit_bytes += r.size if hit else 0
    return (hits / n if n else math.nan), (hit_bytes / total if total else math.nan)


def next_positions(requests: Sequence[ObjectRequest]) -> list[int]:
    """For each request, the position of the next lookup request of the same object (NEVER if none)."""
    out, following = [NEVER] * len(requests), {}
    for i in range(len(requests) - 1, -1, -1):
        out[i] = following.get(requests[i].key_id, NEVER)
        if not requests[i].insert:
            following[requests[i].key_id] = i
    return out


def stream_ours(work: Workload, requests: Sequence[ObjectRequest], name: str, capacity: int,
                **kw: Any) -> tuple[float, float]:
    """One of our policies as a plain object cache over the stream (only insert/hit/evict reach it)."""
    if name == "belady":
        kw["next_uses"] = work.next_uses()
    store = PolicyStore(make_policy(name, **kw), capacity)
    entry_of = {i: e for e, i in work.entry_ids().items()}

    def get(pos: int, r: ObjectRequest) -> bool:
        entry = entry_of[r.key_id]
        store.handle(ClockMoved(pos, pos + 1))
        if store.contains(entry):
            store.handle(LayerServed(entry))
            return True
        store.insert(entry, r.size, entry[0], tuple(range(entry[1] + 1)) if work.mode == "prefix" else ())
        return False

    return stream_ratios(requests, get)


def stream_lcs(requests: Sequence[ObjectRequest], nxt: Sequence[int], make: Callable[[int], Any],
               capacity: int) -> tuple[float, float]:
    cache = make(capacity)
    return stream_ratios(requests, lambda i, r: r.size <= capacity and cache.get(lcs_request(r.key_id, r.size, nxt[i])))


# ------------------------------------------------------------------------------------------------ driver
def row(trace: str, family: str, policy: str, pct: float, cap: int, result: ReplayResult | None,
        stream: tuple[float, float]) -> dict[str, Any]:
    out = {"trace": trace, "family": family, "policy": policy, "capacity_pct": pct, "capacity_bytes": cap,
           "stream_object_hit_ratio": stream[0], "stream_byte_hit_ratio": stream[1]}
    if result is not None:
        out.update(transfer_yield=result.transfer_yield, hit_ratio=result.hit_ratio,
                   byte_hit_ratio=result.byte_hit_ratio, object_hit_ratio=result.object_hit_ratio)
        if family == "ours":
            out.update(evictions=result.evictions, max_used_bytes=result.max_used_bytes)
    return out


def compare_trace(name: str, work: Workload, capacities: Sequence[float], P: int, S: int,
                  advance: Callable[[], None]) -> list[dict[str, Any]]:
    """Every policy at every capacity on one trace."""
    rows = []
    requests = work.requests()
    nxt = next_positions(requests)
    ids, uses = work.entry_ids(), work.next_uses()
    lcs = libcachesim_policies()
    for pct in capacities:
        cap = int(work.total_bytes * pct / 100)
        for policy in OURS:
            result = replay(work, policy, cap, population_size=P, sample_size=S)
            rows.append(row(name, "ours", policy, pct, cap, result, stream_ours(work, requests, policy, cap)))
            advance()
        for label, make in lcs.items():
            result = None
            if label not in STREAM_ONLY:
                result = run(work, LibCacheSimStore(make(cap), cap, ids, uses), f"libcachesim:{label}", cap, P, S)
            rows.append(row(name, "libcachesim", label, pct, cap, result, stream_lcs(requests, nxt, make, cap)))
            advance()
        best = next(r["transfer_yield"] for r in rows if r["policy"] == "belady" and r["capacity_pct"] == pct)
        for r in rows:
            if r["capacity_pct"] == pct and "transfer_yield" in r:
                r["yield_vs_belady"] = r["transfer_yield"] / best if best else math.nan
    return rows


def window_sweep(name: str, work: Workload, windows: Sequence[int], capacities: Sequence[float], P: int, S: int,
                 belady: dict[float, float], advance: Callable[[], None]) -> list[dict[str, Any]]:
    rows = []
    for w in windows:
        for pct in capacities:
            result = replay(work, "donor-window", int(work.total_bytes * pct / 100), population_size=P,
                            sample_size=S, policy_kwargs={"window": w})
            rows.append({"trace": name, "window": w, "capacity_pct": pct, "transfer_yield": result.transfer_yield,
                         "yield_vs_belady": result.transfer_yield / belady[pct] if belady[pct] else math.nan})
            advance()
    return rows


# ---------------------------------------------------------------------------------------------- output
def write_csv(path: str, rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(columns), extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)


def plot_yield(path: str, trace: str, rows: Sequence[dict[str, Any]]) -> None:
    fig = Figure(figsize=(8, 5))
    ax = fig.add_subplot()
    lines = list(dict.fromkeys((r["family"], r["policy"]) for r in rows if "transfer_yield" in r))
    colors = matplotlib.colormaps["tab20"]
    for n, (family, policy) in enumerate(lines):
        pts = [(r["capacity_pct"], r["transfer_yield"]) for r in rows
               if r["family"] == family and r["policy"] == policy and "transfer_yield" in r]
        ax.plot(*zip(*pts), "-" if family == "ours" else "--", marker="o" if family == "ours" else "s", ms=3,
                color=colors(n % 20), label=policy if family == "ours" else f"libCacheSim {policy}")
    _log_x(ax, [r["capacity_pct"] for r in rows])
    ax.set(xlabel="cache capacity (% of all bytes stored)", ylabel="transfer yield (vs unbounded cache)",
           title=f"{trace}: bytes served as warm starts", ylim=(0, 1.05))
    ax.legend(fontsize=7, ncol=2)
    _save(fig, path)


def plot_sweep(path: str, trace: str, rows: Sequence[dict[str, Any]]) -> None:
    fig = Figure(figsize=(7, 4.5))
    ax = fig.add_subplot()
    for pct in dict.fromkeys(r["capacity_pct"] for r in rows):
        pts = [(r["window"], r["transfer_yield"]) for r in rows if r["capacity_pct"] == pct]
        ax.plot(*zip(*pts), marker="o", ms=3, label=f"{pct:g}% capacity")
    _log_x(ax, [r["window"] for r in rows])
    ax.set(xlabel="donor-window W (evaluations)", ylabel="transfer yield", title=f"{trace}: donor-window sweep",
           ylim=(0, 1.05))
    ax.legend(fontsize=7)
    _save(fig, path)


def _log_x(ax: Any, values: Sequence[float]) -> None:
    ticks = sorted(set(values))
    ax.set_xscale("log")
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.minorticks_off()


def _save(fig: Figure, path: str) -> None:
    FigureCanvasAgg(fig)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def trace_names(paths: Sequence[str]) -> list[str]:
    """Short unique names: the run folder for ``.../RUN/trace.jsonl``, else the file stem."""
    names = []
    for p in paths:
        base = os.path.basename(p)
        name = os.path.basename(os.path.dirname(os.path.abspath(p))) if base == "trace.jsonl" else base.split(".")[0]
        names.append(name if name not in names else f"{name}-{len(names)}")
    return names


def numbers(text: str, kind: type) -> list:
    try:
        out = [kind(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    if not out or any(x <= 0 for x in out):
        raise argparse.ArgumentTypeError(f"expected positive numbers, got {text!r}")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("traces", nargs="+", metavar="TRACE")
    p.add_argument("--capacities", type=lambda t: numbers(t, float), default=[1, 2, 5, 10, 20, 50],
                   help="percent of all bytes stored (default 1,2,5,10,20,50)")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--window-sweep", type=lambda t: numbers(t, int), metavar="W,...",
                   help="donor-window sizes to sweep, e.g. 10,25,50,100,200,400")
    p.add_argument("--mode", choices=("prefix", "compatible"), help="transfer mode (default: summary.json or prefix)")
    p.add_argument("--population", type=int, metavar="P", help="default: summary.json, else inferred")
    p.add_argument("--sample", type=int, metavar="S", help="default: summary.json, else P // 4")
    args = p.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    names = trace_names(args.traces)
    lcs = libcachesim_policies()
    if not lcs:
        print("libcachesim is not installed (pip install -e '.[bench]'): comparing our policies only",
              file=sys.stderr)
    per_trace = len(args.capacities) * (len(OURS) + len(lcs) + len(args.window_sweep or ()))
    rows, sweep = [], []
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns) as bar:
        task = bar.add_task("replaying", total=per_trace * len(args.traces))
        for name, path in zip(names, args.traces):
            settings = trace_settings(path)
            bar.update(task, description=f"{name}: loading")
            work = Workload(read_trace(path), args.mode or settings.get("transfer", "prefix"))
            P, S = population_params(work, args.population or settings.get("population"),
                                     args.sample or settings.get("sample"))
            bar.update(task, description=f"{name}: policies")
            mine = compare_trace(name, work, args.capacities, P, S, lambda: bar.advance(task))
            rows += mine
            plot_yield(os.path.join(args.out, f"{name}.png"), name, mine)
            if args.window_sweep:
                bar.update(task, description=f"{name}: window sweep")
                belady = {r["capacity_pct"]: r["transfer_yield"] for r in mine if r["policy"] == "belady"}
                got = window_sweep(name, work, args.window_sweep, args.capacities, P, S, belady,
                                   lambda: bar.advance(task))
                sweep += got
                plot_sweep(os.path.join(args.out, f"window_sweep_{name}.png"), name, got)
    write_csv(os.path.join(args.out, "policy_compare.csv"), rows, COLUMNS)
    if sweep:
        write_csv(os.path.join(args.out, "window_sweep.csv"), sweep,
                  ("trace", "window", "capacity_pct", "transfer_yield", "yield_vs_belady"))
    print(f"wrote {args.out}/policy_compare.csv ({len(rows)} rows)" + (" and window_sweep.csv" if sweep else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
