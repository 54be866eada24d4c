"""Compare eviction policies on recorded search traces: ours and libCacheSim's, on the same stream.

    python bench/policy_compare.py TRACE... --capacities 1,2,5,10,20,50 --out DIR [--window-sweep 10,25,50,100]

Capacities are percent of all bytes the trace ever stores. Every policy sees the identical event stream
of ``tensorcache.replay`` (inserts at t_end, lookups at t_start), at the setting a search uses (donor-window
and evolution-aware with W = 4P). Yields are split into transfer (the headline: children of a new
architecture) and revisit bytes; ``bound`` is the proven upper bound of ``tensorcache.bound`` (interval
relaxation) and ``belady`` the Belady heuristic. Two evaluations (bench/README.md):

* prefix-aware (transfer_yield, hit_ratio, byte_hit_ratio, object_hit_ratio): the policy decides what is
  cached, and each lookup serves the best single donor among cached entries as TensorCache does. Our
  policies run through ``replay``; a libCacheSim cache runs as the store itself: ``get`` admits each new
  entry and is called for every entry a lookup serves (a hit), ``find(update_cache=False)`` says what it
  still holds. Entries a lookup does not serve are never requested, so nothing evicted comes back.
* stream (stream_object_hit_ratio, stream_byte_hit_ratio): the exported object request stream played
  through each cache as a plain object cache (a miss admits), ratios over the lookup requests.

libCacheSim gets sizes in a unit that keeps its capacity below 2**30 (``lcs_unit``): bytes when the
capacity is under 1 GiB, else the smallest power of two that brings it under, sizes rounded up.

Writes DIR/policy_compare.csv, DIR/<trace>.png (yield vs capacity), and with --window-sweep
DIR/window_sweep.csv and DIR/window_sweep_<trace>.png (donor-window's W against yield).
"""
from __future__ import annotations

import argparse
import csv
import math
import os
import sys
import time
from bisect import bisect_left
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from common import HIDDEN_C_LINES, c_stderr_hidden, exit_status, numbers

from tensorcache.bound import interval_bound
from tensorcache.catalog import Entry
from tensorcache.cli import dashed_values, positive_int
from tensorcache.events import ClockMoved, Inserted, LayerServed, PolicyEvent
from tensorcache.policies import make_policy
from tensorcache.replay import (
    PolicyStore,
    ReplayResult,
    Store,
    Workload,
    population_params,
    replay,
    run,
    trace_settings,
)
from tensorcache.trace import read_records

OURS = ("fifo", "lru", "lfu", "donor-window", "evolution-aware", "belady")
# label -> libCacheSim class name; missing classes are skipped
LIBCACHESIM = {"LRU": "LRU", "ARC": "ARC", "LIRS": "LIRS", "TinyLFU": "WTinyLFU", "S3-FIFO": "S3FIFO",
               "SIEVE": "Sieve", "GDSF": "GDSF", "Belady": "Belady", "BeladySize": "BeladySize"}
# BeladySize scores objects by their distance to the next access measured on the cache's own request
# counter, which only matches the stream when every stream request is sent (stream mode).
STREAM_ONLY = {"BeladySize"}
NEVER = 2**63 - 1  # libCacheSim's "no next access"
# libCacheSim's parameters, stated in bench/README.md: its defaults, passed explicitly so a change shows here
LCS_PARAMS: dict[str, dict[str, Any]] = {"WTinyLFU": {"main_cache": "SLRU", "window_size": 0.01},
                                         "S3FIFO": {"small_size_ratio": 0.1, "ghost_size_ratio": 0.9,
                                                    "move_to_main_threshold": 2}}
LCS_MAX_UNITS = 2**30  # WTinyLFU's counting Bloom filter overflows above 2**31 units of capacity
WINDOWED = ("donor-window", "evolution-aware")  # run at W = 4P, as run_search does
COLUMNS = ("trace", "family", "policy", "capacity_pct", "capacity_bytes", "transfer_yield", "revisit_yield",
           "total_yield", "transfer_vs_bound", "transfer_vs_belady", "total_vs_bound", "hit_ratio",
           "byte_hit_ratio", "object_hit_ratio", "stream_object_hit_ratio", "stream_byte_hit_ratio", "evictions",
           "max_used_bytes", "seconds")


# ------------------------------------------------------------------------------------------ libCacheSim
def libcachesim_policies() -> dict[str, Callable[[int], Any]]:
    """label -> constructor taking the cache size in units (``lcs_unit``), for the libCacheSim classes installed."""
    try:
        import libcachesim
    except ImportError:
        return {}
    return {label: (lambda size, c=getattr(libcachesim, cls), kw=LCS_PARAMS.get(cls, {}): c(size, **kw))
            for label, cls in LIBCACHESIM.items() if hasattr(libcachesim, cls)}


def lcs_unit(capacity_bytes: int) -> int:
    """Bytes per unit given to libCacheSim: 1 while the capacity is under 2**30, else the smallest power of
    two that brings it under."""
    unit = 1
    while capacity_bytes // unit >= LCS_MAX_UNITS:
        unit *= 2
    return unit


def units(nbytes: int, unit: int) -> int:
    """A size in libCacheSim units, rounded up (an object never looks smaller than it is)."""
    return -(-nbytes // unit)


def lcs_request(obj_id: int, size: int, next_access: int) -> Any:
    import libcachesim

    req = libcachesim.Request()
    req.obj_id, req.obj_size, req.next_access_vtime, req.valid = obj_id, size, next_access, True
    return req


class LibCacheSimStore(Store):
    """A libCacheSim cache as replay's store: it admits and evicts on its own, so replay asks it which of a
    donor's layers it still holds. Sizes and capacity go to it in units of ``lcs_unit(capacity)`` bytes."""

    def __init__(self, make: Callable[[int], Any], capacity: int, ids: dict[Entry, int],
                 uses: dict[Entry, list[int]]) -> None:
        self.unit = lcs_unit(capacity)
        self.capacity = capacity // self.unit
        self.cache, self.ids, self.uses = make(self.capacity), ids, uses
        self.sizes: dict[Entry, int] = {}  # in units
        self.end = 0

    def _req(self, entry: Entry) -> Any:
        uses = self.uses.get(entry, ())
        i = bisect_left(uses, self.end)  # the next use after the current event
        return lcs_request(self.ids[entry], self.sizes[entry], uses[i] if i < len(uses) else NEVER)

    def contains(self, entry: Entry) -> bool:
        return entry in self.sizes and self.cache.find(self._req(entry), False) is not None

    def insert(self, event: Inserted) -> tuple[bool, Sequence[Entry]]:
        size = units(event.size, self.unit)
        if size > self.capacity:  # libCacheSim would refuse it too, with a warning per request
            return False, ()
        self.sizes[event.key] = size
        self.cache.get(self._req(event.key))
        return self.contains(event.key), ()

    def missing(self, donor: str, layers: Sequence[int]) -> list[int]:
        return [j for j in layers if not self.contains((donor, j))]

    def handle(self, event: PolicyEvent) -> None:
        if isinstance(event, LayerServed):
            self.cache.get(self._req(event.key))
        elif isinstance(event, ClockMoved):
            self.end = event.end


# ------------------------------------------------------------------------------------------ request stream
class ObjectRequest(NamedTuple):
    """One object request of the stream fed to libCacheSim; ``insert`` marks the admitting requests."""

    time: float
    key_id: int
    size: int
    insert: bool


def entry_ids(work: Workload) -> dict[Entry, int]:
    """The key_id of every entry in the request stream: from 1, in order of first insert."""
    ids: dict[Entry, int] = {}
    for ev in work.events:
        if ev.insert:
            for i in range(len(ev.evaluation.sizes)):
                ids[(ev.evaluation.model_id, i)] = len(ids) + 1
    return ids


def request_stream(work: Workload) -> list[ObjectRequest]:
    """The object request stream of ``tensorcache.replay.stream`` (the positions Belady's next uses count):
    one admitting request per layer of each insert, then each lookup's designated layers; one event's
    requests carry its time."""
    ids = entry_ids(work)
    requested = iter(work.requested)
    out = []
    for ev in work.events:
        e = ev.evaluation
        if ev.insert:
            out.extend(ObjectRequest(ev.time, ids[(e.model_id, i)], size, True) for i, size in enumerate(e.sizes))
        else:
            got = next(requested)
            sizes = work.models[got.donor].evaluation.sizes if got.donor is not None else ()
            out.extend(ObjectRequest(ev.time, ids[(got.donor, j)], sizes[j], False) for _, j in got.pairs)
    return out


def write_requests_csv(requests: Sequence[ObjectRequest], path: str | os.PathLike) -> None:
    """CSV with header ``time,obj_id,obj_size,insert`` (libCacheSim's csv reader takes the first three)."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["time", "obj_id", "obj_size", "insert"])
        w.writerows((r.time, r.key_id, r.size, int(r.insert)) for r in requests)


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


def stream_ours(work: Workload, requests: Sequence[ObjectRequest], name: str, capacity: int, P: int) -> tuple[float, float]:
    """One of our policies as a plain object cache over the stream (only insert/hit/evict reach it)."""
    kw = policy_options(work, name, P)
    store = PolicyStore(make_policy(name, **kw), capacity)
    entry_of = {i: e for e, i in entry_ids(work).items()}

    def get(pos: int, r: ObjectRequest) -> bool:
        entry = entry_of[r.key_id]
        store.handle(ClockMoved(pos, pos + 1))
        if store.contains(entry):
            store.handle(LayerServed(entry))
            return True
        store.insert(Inserted(entry, r.size, entry[0], tuple(range(entry[1] + 1)) if work.mode == "prefix" else ()))
        return False

    return stream_ratios(requests, get)


def stream_lcs(requests: Sequence[ObjectRequest], nxt: Sequence[int], make: Callable[[int], Any],
               capacity: int) -> tuple[float, float]:
    unit = lcs_unit(capacity)
    cap = capacity // unit
    with c_stderr_hidden("libCacheSim"):
        cache = make(cap)
        return stream_ratios(requests, lambda i, r: units(r.size, unit) <= cap and
                             cache.get(lcs_request(r.key_id, units(r.size, unit), nxt[i])))


# ------------------------------------------------------------------------------------ prefix-aware runs
def policy_options(work: Workload, name: str, P: int) -> dict[str, Any]:
    """What a search would give the policy: W = 4P for the windowed ones, the future for Belady."""
    if name in WINDOWED:
        return {"window": 4 * P}
    if name == "belady":
        return {"next_uses": work.next_uses()}
    return {}


def bound_row(work: Workload, capacity: int) -> dict[str, Any]:
    """The proven upper bound (interval relaxation) on each yield at ``capacity``."""
    t0 = time.perf_counter()
    ref = work.unbounded
    out = {"transfer_yield": interval_bound(work, capacity, "transfer") / ref.transfer_bytes_served
           if ref.transfer_bytes_served else math.nan,
           "revisit_yield": interval_bound(work, capacity, "revisit") / ref.revisit_bytes_served
           if ref.revisit_bytes_served else math.nan,
           "total_yield": interval_bound(work, capacity, "all") / ref.bytes_served if ref.bytes_served else math.nan}
    out["seconds"] = time.perf_counter() - t0
    return out


def result_row(result: ReplayResult, seconds: float) -> dict[str, Any]:
    return {"transfer_yield": result.transfer_yield, "revisit_yield": result.revisit_yield,
            "total_yield": result.total_yield, "hit_ratio": result.hit_ratio, "byte_hit_ratio": result.byte_hit_ratio,
            "object_hit_ratio": result.object_hit_ratio, "evictions": result.evictions,
            "max_used_bytes": result.max_used_bytes, "seconds": seconds}


def prefix_aware(work: Workload, capacity: int, P: int, S: int, ours: Sequence[str],
                 lcs: dict[str, Callable[[int], Any]]) -> list[tuple[str, str, dict[str, Any]]]:
    """(family, policy, metrics) of every policy at one capacity, plus the bound, as ``TensorCache`` serves."""
    out = [("bound", "bound", bound_row(work, capacity))]
    ids, uses = (entry_ids(work), work.next_uses()) if lcs else ({}, {})
    for name in ours:
        t0 = time.perf_counter()
        result = replay(work, name, capacity, population_size=P, sample_size=S,
                        policy_options=policy_options(work, name, P))
        out.append(("ours", name, result_row(result, time.perf_counter() - t0)))
    for label, make in lcs.items():
        if label in STREAM_ONLY:
            continue
        t0 = time.perf_counter()
        with c_stderr_hidden("libCacheSim"):
            result = run(work, LibCacheSimStore(make, capacity, ids, uses), f"libcachesim:{label}", capacity, P, S)
        out.append(("libcachesim", label, result_row(result, time.perf_counter() - t0)))
    for _, _, row in out:  # the yields as fractions of the bound and of the Belady heuristic
        bound = out[0][2]
        belady = next((r for _, n, r in out if n == "belady"), None)
        row["transfer_vs_bound"] = _frac(row["transfer_yield"], bound["transfer_yield"])
        row["total_vs_bound"] = _frac(row["total_yield"], bound["total_yield"])
        row["transfer_vs_belady"] = _frac(row["transfer_yield"], belady["transfer_yield"]) if belady else math.nan
    return out


def _frac(a: float, b: float) -> float:
    return a / b if b and not math.isnan(b) else math.nan


# ------------------------------------------------------------------------------------------------ driver
def compare_trace(name: str, work: Workload, capacities: Sequence[float], P: int, S: int,
                  advance: Callable[[], None]) -> list[dict[str, Any]]:
    """Every policy at every capacity on one trace: prefix-aware metrics, then the stream evaluation."""
    rows = []
    stream = request_stream(work)
    nxt = next_positions(stream)
    lcs = libcachesim_policies()
    for pct in capacities:
        cap = int(work.total_bytes * pct / 100)
        for family, policy, metrics in prefix_aware(work, cap, P, S, OURS, lcs):
            row = {"trace": name, "family": family, "policy": policy, "capacity_pct": pct, "capacity_bytes": cap,
                   **metrics}
            if family == "ours":
                row["stream_object_hit_ratio"], row["stream_byte_hit_ratio"] = stream_ours(work, stream, policy, cap, P)
            elif family == "libcachesim":
                row["stream_object_hit_ratio"], row["stream_byte_hit_ratio"] = stream_lcs(stream, nxt, lcs[policy], cap)
            rows.append(row)
            advance()
        for label in STREAM_ONLY & lcs.keys():
            ratios = stream_lcs(stream, nxt, lcs[label], cap)
            rows.append({"trace": name, "family": "libcachesim", "policy": label, "capacity_pct": pct,
                         "capacity_bytes": cap, "stream_object_hit_ratio": ratios[0],
                         "stream_byte_hit_ratio": ratios[1]})
            advance()
    return rows


def window_sweep(name: str, work: Workload, windows: Sequence[int], capacities: Sequence[float], P: int, S: int,
                 belady: dict[float, float], advance: Callable[[], None]) -> list[dict[str, Any]]:
    rows = []
    for w in windows:
        for pct in capacities:
            result = replay(work, "donor-window", int(work.total_bytes * pct / 100), population_size=P,
                            sample_size=S, policy_options={"window": w})
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


HIGHLIGHT = {"bound": ("black", ":"), "evolution-aware": ("tab:red", "-"), "donor-window": ("tab:blue", "-")}


def plot_yield(path: str, trace: str, rows: Sequence[dict[str, Any]]) -> None:
    """Transfer yield against capacity: the bound, our two popularity policies and the best other policy in
    colour, every other policy as a thin grey line; the y-axis spans the data, not 0..1."""
    fig = Figure(figsize=(8.5, 5))
    ax = fig.add_subplot()
    curves = {}
    for r in rows:
        if "transfer_yield" in r:
            label = f"libCacheSim {r['policy']}" if r["family"] == "libcachesim" else r["policy"]
            curves.setdefault(label, []).append((r["capacity_pct"], r["transfer_yield"]))
    others = [k for k in curves if k not in HIGHLIGHT]
    best_other = max(others, key=lambda k: sum(y for _, y in curves[k]), default=None)
    for label, pts in curves.items():
        if label in HIGHLIGHT or label == best_other:
            colour, style = HIGHLIGHT.get(label, ("tab:green", "--"))
            ax.plot(*zip(*pts), style, marker="o", ms=4, lw=2, color=colour,
                    label=f"{label} (best other)" if label == best_other else label, zorder=3)
    rest = [k for k in others if k != best_other]
    for n, label in enumerate(rest):
        ax.plot(*zip(*curves[label]), "-", lw=0.8, color="0.7", zorder=1,
                label=f"{len(rest)} other policies" if n == 0 else None)
    _log_x(ax, [r["capacity_pct"] for r in rows])
    ys = [y for pts in curves.values() for _, y in pts if y == y]
    if ys:
        pad = max(0.01, 0.05 * (max(ys) - min(ys)))
        ax.set_ylim(min(ys) - pad, min(1.0, max(ys)) + pad)
    ax.set(xlabel="cache capacity (% of all bytes stored)",
           ylabel="transfer yield (fraction of an unbounded cache's bytes)",
           title=f"{trace}: bytes served to new architectures (revisits excluded)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
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


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("traces", nargs="+", metavar="TRACE")
    p.add_argument("--capacities", type=lambda t: numbers(t, float), default=[1, 2, 5, 10, 20, 50],
                   help="percent of all bytes stored (default 1,2,5,10,20,50)")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--window-sweep", type=lambda t: numbers(t, int), metavar="W,...",
                   help="donor-window sizes to sweep, e.g. 10,25,50,100,200,400")
    p.add_argument("--mode", choices=("prefix", "compatible"), help="transfer mode (default: summary.json or prefix)")
    p.add_argument("--population", type=positive_int, metavar="P", help="default: summary.json, else inferred")
    p.add_argument("--sample", type=positive_int, metavar="S", help="default: summary.json, else P // 4")
    args = p.parse_args(dashed_values(argv))
    os.makedirs(args.out, exist_ok=True)
    names = trace_names(args.traces)
    lcs = libcachesim_policies()
    if not lcs:
        print("libcachesim is not installed (pip install -e '.[bench]'): comparing our policies only",
              file=sys.stderr)
    per_trace = len(args.capacities) * (1 + len(OURS) + len(lcs) + len(args.window_sweep or ()))
    rows, sweep = [], []
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns) as bar:
        task = bar.add_task("replaying", total=per_trace * len(args.traces))
        for name, path in zip(names, args.traces):
            settings = trace_settings(path)
            bar.update(task, description=f"{name}: loading")
            work = Workload(read_records(path), args.mode or settings.get("transfer", "prefix"))
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
    for library, lines in HIDDEN_C_LINES.items():
        print(f"({library} printed {lines} warning lines to stderr; hidden)")
    return 0


if __name__ == "__main__":
    sys.exit(exit_status(main))
