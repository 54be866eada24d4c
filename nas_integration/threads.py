"""How many torch threads each training worker uses.

Torch's own default is one thread per core. Its threads wait for each other at every operation, so when
other processes hold some of the cores (a shared workstation, an HPC login node, several workers on one
node) a search slows down many times over. The default here is the cores free right now, split among the
node's workers: ``--threads N`` (``SearchSettings.threads``) or ``OMP_NUM_THREADS`` override it.
"""
from __future__ import annotations

import os
import time

__all__ = ["free_cores", "idle_share", "worker_threads"]

PROC_STAT = "/proc/stat"


def _usable_cpus() -> list[int]:
    """The CPU ids this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def _cpu_times(path: str) -> dict[int, tuple[int, int]]:
    """CPU id -> (idle ticks, all ticks) from a /proc/stat-style file."""
    times: dict[int, tuple[int, int]] = {}
    with open(path) as f:
        for line in f:
            name, *ticks = line.split()
            if name.startswith("cpu") and name[3:].isdigit():
                values = [int(t) for t in ticks]
                times[int(name[3:])] = (values[3] + (values[4] if len(values) > 4 else 0), sum(values))
    return times


def free_cores(window_s: float = 0.25, stat_path: str = PROC_STAT) -> float:
    """The idle share of this process's CPUs summed over ``window_s`` seconds (all of them where the kernel
    does not say: no /proc/stat)."""
    cpus = _usable_cpus()
    try:
        before = _cpu_times(stat_path)
        time.sleep(window_s)
        after = _cpu_times(stat_path)
    except (OSError, ValueError, IndexError):
        return float(len(cpus))
    return idle_share(before, after, cpus)


def idle_share(before: dict[int, tuple[int, int]], after: dict[int, tuple[int, int]], cpus: list[int]) -> float:
    """The idle share of ``cpus`` between two (idle ticks, all ticks) snapshots, summed (a CPU the snapshots do
    not list, or one that did not tick, counts as free)."""
    free = 0.0
    for cpu in cpus:
        if cpu in before and cpu in after:
            idle, total = (a - b for a, b in zip(after[cpu], before[cpu]))
            free += idle / total if total > 0 else 1.0
        else:
            free += 1.0
    return free


def worker_threads(given: int | None, workers: int) -> tuple[int, str]:
    """Torch threads per worker for ``workers`` workers on this node, and why: ``given`` (``--threads``), else
    ``OMP_NUM_THREADS``, else the free cores (rounded, at least 1) split evenly among the workers."""
    if given is not None:
        if given < 1:
            raise ValueError(f"threads must be >= 1, got {given}")
        return given, "--threads"
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env:
        if not env.isdigit() or int(env) < 1:
            raise ValueError(f"OMP_NUM_THREADS={env!r} is not a positive whole number")
        return int(env), "OMP_NUM_THREADS"
    free, cores = free_cores(), len(_usable_cpus())
    per_worker = max(1, round(free) // max(1, workers))
    return per_worker, f"{free:.1f} of {cores} cores free at the start, {workers} worker{'s' * (workers != 1)}"
