"""Soak: two workers run an evolution-style search of ~1000 evaluations through memory, LMDB and Redis tiers
(all small, so every tier evicts) while redis-server is killed and restarted several times. Every served
tensor must be the donor's own, and the search must finish."""
from __future__ import annotations

import logging
import random
import threading
import time
from collections import Counter, deque

from tensorcache import TensorCache

EVALS = 1000
KILLS = 4
POPULATION, SAMPLE, POSITIONS, CHOICES = 30, 5, 4, 4


def _mutate(arch: tuple[int, ...], rng: random.Random) -> tuple[int, ...]:
    pos = rng.randrange(POSITIONS)
    value = rng.choice([v for v in range(CHOICES) if v != arch[pos]])
    return arch[:pos] + (value,) + arch[pos + 1:]


def test_a_search_survives_redis_restarts_and_never_serves_a_wrong_tensor(redis_server, tmp_path, layers_of,
                                                                          genuine, caplog):
    workers = [TensorCache(memory="48KB", disk=tmp_path / "soak.lmdb", disk_capacity="400KB",
                           redis=redis_server.url, redis_capacity="1MB", policy="donor-window", namespace="soak")
               for _ in range(2)]
    restarted = threading.Event()

    def chaos() -> None:
        for _ in range(KILLS):
            time.sleep(0.5)
            redis_server.stop()
            time.sleep(0.3)
            redis_server.start()
        restarted.set()

    rng = random.Random(0)
    archs: dict[str, tuple[int, ...]] = {}
    population: deque[tuple[str, float]] = deque(maxlen=POPULATION)
    served: Counter[str] = Counter()
    served_after_chaos: Counter[str] = Counter()
    start = time.monotonic()
    killer = threading.Thread(target=chaos, daemon=True)
    with caplog.at_level(logging.WARNING, logger="tensorcache"):
        killer.start()
        n = 0
        while n < EVALS or not restarted.is_set() or served_after_chaos["redis"] == 0:
            assert time.monotonic() - start < 50, f"soak too slow: {n} evaluations, served {dict(served)}"
            worker = workers[n % 2]
            if len(population) < POPULATION:
                parent, child = None, tuple(rng.randrange(CHOICES) for _ in range(POSITIONS))
            else:
                parent = max(rng.sample(list(population), SAMPLE), key=lambda member: member[1])[0]
                child = _mutate(archs[parent], rng)
            chaos_over = restarted.is_set()
            hit = worker.lookup(child, parent=parent)
            if hit is not None:
                genuine(hit, archs, child)
                served[hit.slowest_tier] += 1
                if chaos_over:
                    served_after_chaos[hit.slowest_tier] += 1
            model = f"m{n}"
            archs[model] = child
            score = rng.random()
            worker.put(model, child, layers_of(n, POSITIONS, 64), score=score, parent=parent)
            for w in workers:
                w.notify_evaluation()
            population.append((model, score))
            n += 1
    killer.join()
    assert time.monotonic() - start < 60
    stats = [w.stats() for w in workers]
    assert sum(s["hits"] for s in stats) > n // 4 and served["redis"] > 0 and served["lmdb"] > 0
    assert all(s["corrupt"] == 0 for s in stats)
    assert all(s["evictions"].get(f"{tier}:capacity", 0) > 0 for s in stats for tier in ("memory", "lmdb"))
    warnings = [r for r in caplog.records if "unreachable" in r.getMessage()]
    assert 1 <= len(warnings) <= KILLS * len(workers), "one warning per outage and worker, not one per call"
    for w in workers:
        w.close()
