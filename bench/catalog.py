"""What opening a cache costs against the history of its shared tier: time and peak memory of a fresh process
that opens a TensorCache on an LMDB file which saw H puts but holds L live models now.

    python bench/catalog.py [--live 10000] [--history 1000 10000 100000 1000000] [--repeats 3] [--layers 1]
                            [--out DIR]

Each file is filled through the LMDB tier's own books (``tensorcache.tiers.books.hold``/``release``: models
of ``--layers`` layers of one small tensor each, one by default); past L models every new put releases the oldest one, as evictions do. To build
10^6 puts of history in minutes, the fill batches ``--batch`` puts (and their releases) into one LMDB write
transaction; each is logged and trimmed exactly as a put of its own would be, so the file's books, change
log and sequence number are those of H single puts (only LMDB's free-page layout may differ). The baseline is a
file whose history is its live models (H = L, or H when H < L). Each open runs in a new interpreter
(``python -c``: import, open, one lookup, close) and reports its wall seconds, the CPU seconds it spent
(``time.process_time``: what other jobs on a shared machine inflate less) and its resident memory growth
while opening, all of it and the process's own (the rest is pages of mapped files: the store's it touched); the ratio
printed is baseline time / subject time (1.0: history costs nothing), and the memory ratio likewise.

Writes DIR/catalog.csv and DIR/catalog.json.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from typing import Any

from common import exit_status, machine, write_results

import numpy as np

from tensorcache.catalog import LayerRecord, ModelRecord, TensorRef
from tensorcache.cli import dashed_values, positive_int
from tensorcache.layers import LayerMap
from tensorcache.payload import encode
from tensorcache.tiers import LMDBTier, books

NAMESPACE = "bench-catalog"

OPEN = r"""
import json, os, sys, time
def resident():
    with open("/proc/self/status") as f:
        fields = dict(line.split(":", 1) for line in f)
    return int(fields["VmRSS"].split()[0]), int(fields["RssAnon"].split()[0])  # KiB: all, the process's own
from tensorcache import TensorCache
before = resident()
t0, cpu0 = time.perf_counter(), time.process_time()
cache = TensorCache(memory=0, disk=sys.argv[1], disk_capacity="8GB", namespace=sys.argv[2])
opened, cpu = time.perf_counter() - t0, time.process_time() - cpu0
grown = [now - then for now, then in zip(resident(), before)]
models = cache.stats()["models"]
cache.lookup((1, 2, 3))
cache.close()
print(json.dumps({"open_s": opened, "cpu_s": cpu, "rss_kib": grown[0], "own_kib": grown[1], "models": models}))
"""

def fill(path: str, live: int, history: int, batch: int = 1000, layers: int = 1) -> None:
    """``history`` puts of models of ``layers`` one-tensor layers into a fresh LMDB tier at ``path``, keeping
    the last ``live``, ``batch`` puts to a write transaction."""
    tier = LMDBTier(path, capacity=1 << 36, namespace=NAMESPACE)
    lmap = LayerMap.generic(layers)
    indices = list(range(layers))

    def puts(txn: books.Txn, first: int, last: int) -> None:
        for m in range(first, last):
            arch = (m % 7, m, *range(layers - 1))[:max(2, layers)]
            encoded = [encode(np.full(4, m * layers + i, dtype=np.float32)) for i in indices]
            keys = lmap.keys(NAMESPACE, arch)
            record = ModelRecord(f"m{m}", arch, float(m), None, tuple(
                LayerRecord(keys[i], {"w": TensorRef(d, ref["dtype"], tuple(ref["shape"]), ref["nbytes"], ref["kind"])},
                            (i,)) for i, (d, _, ref) in enumerate(encoded)))
            assert books.hold(txn, record.encoded, record.model_id, [(i, [encoded[i][0]]) for i in indices],
                              {d: blob for d, blob, _ in encoded}, tier.capacity, "fill").held
            if m >= live:
                assert books.release(txn, f"m{m - live}", indices, "fill")

    for first in range(0, history, batch):
        tier._run(True, lambda txn, first=first: puts(txn, first, min(history, first + batch)))  # one transaction
    assert not tier.audit().problems
    tier.close()


def open_once(path: str) -> dict[str, Any]:
    done = subprocess.run([sys.executable, "-c", OPEN, path, NAMESPACE], capture_output=True, text=True,
                          check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--live", type=int, default=10_000)
    ap.add_argument("--history", type=positive_int, nargs="+", default=[1_000, 10_000, 100_000])
    ap.add_argument("--repeats", type=positive_int, default=3)
    ap.add_argument("--batch", type=positive_int, default=1000, help="puts per write transaction while filling")
    ap.add_argument("--layers", type=positive_int, default=1, help="one-tensor layers per model (NB201 cells: about 20)")
    ap.add_argument("--out", default="bench/results")
    args = ap.parse_args(dashed_values(argv))
    if args.live < 0:
        ap.error(f"argument --live: expected live models >= 0, got {args.live}")
    rows = []
    with tempfile.TemporaryDirectory() as work:
        for history in args.history:
            live = min(args.live, history)
            subject, baseline = os.path.join(work, f"h{history}"), os.path.join(work, f"b{history}")
            fill(subject, live, history, args.batch, args.layers)
            fill(baseline, live, live, args.batch, args.layers)
            runs: dict[str, list[dict[str, Any]]] = {"subject": [], "baseline": []}
            for _ in range(args.repeats):  # interleaved, so load on the machine hits both alike
                runs["baseline"].append(open_once(baseline))
                runs["subject"].append(open_once(subject))
            med = {k: {f: statistics.median(r[f] for r in v) for f in ("open_s", "cpu_s", "rss_kib", "own_kib")}
                   for k, v in runs.items()}
            assert all(r["models"] == live for v in runs.values() for r in v)
            row = {"history": history, "live": live, "layers": args.layers, "subject_open_s": med["subject"]["open_s"],
                   "baseline_open_s": med["baseline"]["open_s"], "subject_cpu_s": med["subject"]["cpu_s"],
                   "baseline_cpu_s": med["baseline"]["cpu_s"],
                   "time_ratio": med["baseline"]["open_s"] / med["subject"]["open_s"],
                   "subject_rss_kib": med["subject"]["rss_kib"], "baseline_rss_kib": med["baseline"]["rss_kib"],
                   "memory_ratio": med["baseline"]["rss_kib"] / max(1, med["subject"]["rss_kib"]),
                   "subject_own_kib": med["subject"]["own_kib"], "baseline_own_kib": med["baseline"]["own_kib"],
                   "repeats": args.repeats}
            rows.append(row)
            print(f"ratio catalog.open_h{history}_vs_h{live} {row['time_ratio']:.3f}   open {row['subject_open_s']:.3f} s "
                  f"vs {row['baseline_open_s']:.3f} s at {live} live models of {args.layers} layers (CPU {row['subject_cpu_s']:.3f} s vs "
                  f"{row['baseline_cpu_s']:.3f} s); memory ratio {row['memory_ratio']:.3f} "
                  f"({row['subject_rss_kib'] / 1024:.1f} MiB vs {row['baseline_rss_kib'] / 1024:.1f} MiB, of which the "
                  f"process's own {row['subject_own_kib'] / 1024:.1f} MiB vs {row['baseline_own_kib'] / 1024:.1f} MiB, "
                  "the rest pages of mapped files)", flush=True)
    write_results(args.out, "catalog", rows, {"machine": machine(), "args": vars(args)})
    return 0


if __name__ == "__main__":
    sys.exit(exit_status(main))
