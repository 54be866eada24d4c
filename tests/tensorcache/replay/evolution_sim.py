"""A small asynchronous regularized-evolution search that writes replayable trace records (no training)."""
import heapq
import random
from collections import deque

from tensorcache import LayerMap

ONLINE = ("fifo", "lru", "lfu", "donor-window", "evolution-aware")
NAMESPACE = "sim"


def simulate(n=60, positions=6, choices=3, population=8, sample=3, workers=3, seed=0):
    """Asynchronous regularized evolution: a free worker takes the next child at once; finished models
    join the population (last P, oldest first) before a child starting at the same time is bred."""
    rng = random.Random(seed)
    weights = [[rng.random() for _ in range(choices)] for _ in range(positions)]
    base = [rng.randint(1, 6) * 64 for _ in range(positions)]
    lmap = LayerMap.generic(positions)
    free = [(0.0, w) for w in range(workers)]
    running, population_q, records = [], deque(maxlen=population), []
    finished = 0
    for index in range(n):
        t, worker = heapq.heappop(free)
        while running and running[0][0] <= t:
            population_q.append(heapq.heappop(running)[2])
            finished += 1
        if finished < population:
            arch, parent, pos = [rng.randrange(choices) for _ in range(positions)], None, None
        else:
            best = max(rng.sample(list(population_q), sample), key=lambda r: r["score"])
            pos = rng.randrange(positions)
            arch = list(best["arch"])
            arch[pos] = (arch[pos] + rng.randrange(1, choices)) % choices
            parent = best["model_id"]
        duration = rng.uniform(1.0, 3.0)
        rec = {"model_id": f"m{index}", "parent_id": parent, "donor_id": parent, "worker": worker,
               "t_start": t, "t_end": t + duration, "arch": arch, "mutation_pos": pos,
               "score": sum(w[a] for w, a in zip(weights, arch)) + rng.gauss(0, 0.1),
               "layers_served": 0, "bytes_served": 0, "tier": None, "cache_s": 0.0, "train_s": duration,
               "layer_bytes": [b * (1 + a) for b, a in zip(base, arch)],
               "layer_keys": [k.hex() for k in lmap.keys(NAMESPACE, arch)]}
        records.append(rec)
        heapq.heappush(running, (t + duration, index, rec))
        heapq.heappush(free, (t + duration, worker))
    return records


def total_bytes(records):
    return sum(sum(r["layer_bytes"]) for r in records)
