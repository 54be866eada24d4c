"""How many objects does one put leave for Python's cyclic collector, and what do its young collections cost?

    python bench/tracked.py [--puts 2000] [--warmup 1500] [--repeats 3]

A cache like a tabular search's (``run_search --evaluator tabular``: memory + LMDB tiers at their default
sizes scaled to the synthetic tensors, 1/64 of the real layer sizes; donor-window) takes ``--warmup``
NAS-Bench-201 models (enough to fill the memory tier, so puts evict), then ``--puts`` more with the
collector off. Printed per put (about 20 one-tensor layers): the objects the collector tracks that the
puts made and that are still alive, as its next young collection first sees them, after that collection
(it stops tracking tuples that hold only atoms, such as shapes and entry keys) and after a full one (it
stops tracking such dicts too; what is left is walked by every full collection for as long as the model is
held); and the CPU time of those two collections per put. In a long search puts and evictions balance the
collector's allocation count, so its young collections come rarely and each walks every object made since
the last one: what it costs per put is about what is timed here.

Writes DIR/tracked.csv and DIR/tracked.json.
"""
from __future__ import annotations

import argparse
import collections
import gc
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any

from common import exit_status, machine, write_results
from nas_integration.evaluators.tabular import SyntheticPayloads
from nas_integration.spaces import get_space

from tensorcache import CacheConfig, TensorCache
from tensorcache.cli import dashed_values, positive_int

SCALE = 1 / 64  # run_search's payload scale for the tabular evaluator


def one_round(puts: int, warmup: int, seed: int) -> dict[str, Any]:
    space, rng, payloads = get_space("nb201"), random.Random(seed), SyntheticPayloads(seed)
    with tempfile.TemporaryDirectory(prefix="bench-tracked-") as tmp:
        cache = TensorCache(CacheConfig(disk=os.path.join(tmp, "cache.lmdb")).scaled(SCALE))
        layers = 0

        def put(i: int) -> int:
            arch = space.sample(rng)
            lmap = space.layer_map(arch, "prefix")
            tensors = payloads.layers(f"m{i}", space.layer_nbytes(arch, "prefix"), SCALE)
            cache.put(f"m{i}", arch, tensors, score=rng.random(), parent=f"m{i - 1}" if i else None, layer_map=lmap)
            return len(lmap)

        for i in range(warmup):
            put(i)
        gc.collect()
        gc.disable()
        try:
            before = {id(o) for o in gc.get_objects()}
            for i in range(warmup, warmup + puts):
                layers += put(i)

            def new() -> collections.Counter[str]:
                return collections.Counter(type(o).__name__ for o in gc.get_objects() if id(o) not in before)

            first = new()
            cpu = time.process_time()
            gc.collect(0)
            young_s = time.process_time() - cpu
            cpu = time.process_time()
            gc.collect(1)
            young_s += time.process_time() - cpu
            after_young = new()
            gc.collect()
            after_full = new()
        finally:
            gc.enable()
            cache.close()
    return {"puts": puts, "layers_per_put": layers / puts, "first_seen": sum(first.values()) / puts,
            "after_young": sum(after_young.values()) / puts, "after_full": sum(after_full.values()) / puts,
            "young_us_per_put": 1e6 * young_s / puts,
            "by_type_first_seen": {k: round(v / puts, 1) for k, v in first.most_common(12)},
            "by_type_after_full": {k: round(v / puts, 1) for k, v in after_full.most_common(12)}}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--puts", type=positive_int, default=2000)
    p.add_argument("--warmup", type=int, default=1500, help="models put first (the memory tier fills at ~1,200)")
    p.add_argument("--repeats", type=positive_int, default=3)
    p.add_argument("--out", metavar="DIR", default="runs/bench")
    args = p.parse_args(dashed_values(argv))
    rows = [one_round(args.puts, args.warmup, seed) for seed in range(args.repeats)]
    last = rows[-1]
    print(f"  {last['layers_per_put']:.1f} layers per put; by type, first seen: {last['by_type_first_seen']}")
    print(f"  by type, after a full collection: {last['by_type_after_full']}")
    for field, what in (("first_seen", "as its next young collection first sees them"),
                        ("after_young", "after that young collection"),
                        ("after_full", "after a full collection (walked by every later one)")):
        values = [row[field] for row in rows]
        median = statistics.median(values)
        print(f"tracked objects per put, {what}: {median:.1f} ({median / last['layers_per_put']:.1f} per layer; "
              f"{min(values):.1f}-{max(values):.1f})")
    young = [row["young_us_per_put"] for row in rows]
    print(f"young collections' CPU per put: {statistics.median(young):.1f} us ({min(young):.1f}-{max(young):.1f} "
          f"over {args.repeats} rounds)")
    write_results(args.out, "tracked", rows, machine())
    return 0


if __name__ == "__main__":
    sys.exit(exit_status(main))
