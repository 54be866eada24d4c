"""What the LMDB tier's page-preparing thread costs a busy thread beside it in the same process.

    python bench/prefault.py [--seconds 3] [--rate 10] [--mib 5] [--repeats 3] [--reuse] [--quick]

A loop on the main thread allocates, fills and frees a 16 MB numpy array (``--reuse``: fills one buffer
kept, so that it maps no memory) for SECONDS, while a second thread says RATE times a second that the used
part of a sparse file, mapped writable, grew by MIB: to the ``Prefaulter`` the LMDB tier uses (it then
reserves the pages past the used end and faults them into the map), or, without it, to no one. The two
are timed in turns, REPEATS times each; printed as one ratio line per repeat and their median: the
loop's rounds with the prefaulter over its rounds without (1.0: no cost to the loop; the main job puts
about 4.7 MB every 1-4 s, so the default rate is ten or more times its own).
"""
from __future__ import annotations

import argparse
import math
import mmap
import os
import statistics
import tempfile
import sys
import threading
import time

import numpy as np

from common import exit_status
from tensorcache.cli import dashed_values, positive_int
from tensorcache.tiers.prefault import Prefaulter

MiB = 2**20


def loop_rounds(directory: str, prefault: bool, seconds: float, rate: float, mib: int, reuse: bool) -> int:
    """Rounds of the allocation loop in ``seconds`` while the file grows ``rate`` times a second."""
    path = os.path.join(directory, "file")
    size = max(64 * MiB, int(seconds * rate + 2) * mib * MiB + 64 * MiB)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.ftruncate(fd, size)
        with mmap.mmap(fd, size):
            preparer = Prefaulter(fd, "bench-prefault") if prefault else None
            done = threading.Event()

            def grow() -> None:
                used = 0
                while not done.wait(1 / rate):
                    used = min(size, used + mib * MiB)
                    if preparer is not None:
                        preparer.wake(used, size)

            waker = threading.Thread(target=grow)
            waker.start()
            kept = np.zeros(2 * MiB)
            rounds, end = 0, time.perf_counter() + seconds
            while time.perf_counter() < end:
                if reuse:
                    kept[:] = 1.0
                    kept += 1
                else:
                    fresh = np.ones(2 * MiB)
                    fresh += 1
                    del fresh
                rounds += 1
            done.set()
            waker.join()
            if preparer is not None:
                preparer.stop()
    finally:
        os.close(fd)
        os.unlink(path)
    return rounds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rate", type=float, default=10.0, help="growths a second")
    parser.add_argument("--mib", type=positive_int, default=5, help="MiB per growth")
    parser.add_argument("--repeats", type=positive_int, default=3)
    parser.add_argument("--reuse", action="store_true", help="the loop fills one kept buffer (maps no memory)")
    parser.add_argument("--quick", action="store_true", help="CI smoke size: 0.5 s, one repeat")
    args = parser.parse_args(dashed_values())
    if not 0 < args.seconds < math.inf:
        parser.error(f"argument --seconds: expected finite seconds > 0, got {args.seconds:g}")
    if not 0 <= args.rate < math.inf:
        parser.error(f"argument --rate: expected a finite rate >= 0, got {args.rate:g}")
    if args.quick:
        args.seconds, args.repeats = 0.5, 1
    ratios = []
    with tempfile.TemporaryDirectory(dir=os.getcwd()) as directory:
        for i in range(args.repeats):
            without = loop_rounds(directory, False, args.seconds, args.rate, args.mib, args.reuse)
            with_ = loop_rounds(directory, True, args.seconds, args.rate, args.mib, args.reuse)
            ratios.append(with_ / without)
            print(f"ratio prefault.loop_rounds.run{i + 1}  {ratios[-1]:.3f}  ({with_} rounds with, {without} without)")
    kind = "a reused buffer" if args.reuse else "16 MB allocations"
    print(f"ratio prefault.loop_rounds  {statistics.median(ratios):.3f}  median; {kind}, {args.mib} MiB "
          f"{args.rate:g} times a second, load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    sys.exit(exit_status(main))
