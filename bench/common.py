"""Shared helpers of the benches: interleaved timing, ratio lines, result files, a throwaway redis-server.

Every bench compares a subject with a baseline measured in the same run: the two are timed in turns
(their order rotating every repeat) so that noise from a shared machine hits both alike, and the
reported figure is the ratio of medians, subject throughput / baseline throughput (= baseline time /
subject time). Ratio lines start with ``ratio `` so that tests and scripts can find them.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import datetime
import gc
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tensorcache.sizes import format_size

MiB = 2**20


def data_path(name: str) -> str | None:
    """Default folder of full data set ``name`` for a bench: $TENSORCACHE_DATA/<name>, or None to let the
    loader look in the user cache and download it there."""
    root = os.environ.get("TENSORCACHE_DATA")
    return os.path.join(root, name) if root else None

Case = tuple[Callable[[], Any], Callable[[], Any] | None]  # (timed call, untimed setup run before it)


def in_turns(names: Sequence[str], rounds: int) -> Iterator[tuple[int, str]]:
    """(round, name) for ``rounds`` rounds over ``names``, the order rotating by one each round, so that no
    case always runs first or right after the same neighbour."""
    for round_ in range(rounds):
        shift = round_ % len(names)
        for name in [*names[shift:], *names[:shift]]:
            yield round_, name


def interleaved(cases: Mapping[str, Case], repeats: int, warmup: int = 1,
                clock: Callable[[], float] = time.perf_counter, pause_gc: bool = True) -> dict[str, list[float]]:
    """Seconds of ``clock`` each timed call took, ``repeats`` per case after ``warmup`` untimed rounds, cases
    taken in turns.

    The garbage collector runs once before and, with ``pause_gc``, is off while a call is timed (leave it on
    for calls whose cost includes the collector's, such as a whole search); each setup runs just before its
    call, untimed.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    times: dict[str, list[float]] = {n: [] for n in cases}
    gc.collect()
    for round_, name in in_turns(list(cases), warmup + repeats):
        call, setup = cases[name]
        if setup is not None:
            setup()
        if pause_gc:
            gc.disable()
        try:
            t0 = clock()
            call()
            elapsed = clock() - t0
        finally:
            if pause_gc:
                gc.enable()
        if round_ >= warmup:
            times[name].append(elapsed)
    return times


@dataclass
class Comparison:
    """One subject against its baseline on the same bytes; ``ratio`` = subject / baseline throughput."""

    group: str
    label: str
    subject: str
    baseline: str
    nbytes: int  # bytes each call moves (0: a CPU comparison, no bytes to count)
    subject_s: list[float]
    baseline_s: list[float]
    target: float | None = None  # the ratio the subject should reach (None: informative only)
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def subject_median(self) -> float:
        return statistics.median(self.subject_s)

    @property
    def baseline_median(self) -> float:
        return statistics.median(self.baseline_s)

    @property
    def ratio(self) -> float:
        return self.baseline_median / self.subject_median if self.subject_median > 0 else float("inf")

    @property
    def met(self) -> bool | None:
        return None if self.target is None else self.ratio >= self.target

    def row(self) -> dict[str, Any]:
        """A flat record for CSV/JSON (times in seconds, throughputs in MB/s = 10^6 bytes/s)."""
        s, b = self.subject_median, self.baseline_median
        return {"group": self.group, "label": self.label, "subject": self.subject, "baseline": self.baseline,
                "nbytes": self.nbytes, "repeats": len(self.subject_s),
                "subject_median_s": s, "subject_min_s": min(self.subject_s),
                "baseline_median_s": b, "baseline_min_s": min(self.baseline_s),
                "subject_MBps": mbps(self.nbytes, s), "baseline_MBps": mbps(self.nbytes, b),
                "ratio": self.ratio, "target": self.target, "met": self.met, "note": self.note, **self.extra}

    def line(self) -> str:
        """``ratio <label> <value> ...`` with both medians and the target verdict."""
        verdict = "" if self.target is None else (
            f"  target >= {self.target:.2f}: {'met' if self.met else 'SHORT'}")
        return (f"ratio {self.label:<34} {self.ratio:7.3f}   {self.subject} {fmt_s(self.subject_median)}"
                f" vs {self.baseline} {fmt_s(self.baseline_median)}{verdict}")


def mbps(nbytes: int, seconds: float) -> float:
    return nbytes / seconds / 1e6 if seconds > 0 else float("inf")


def fmt_s(seconds: float) -> str:
    """Seconds in the unit that reads best (us, ms, s)."""
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f} us"
    if seconds < 1:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.2f} s"


def fmt_bytes(n: int) -> str:
    """Binary size in a comparison's label (the tier bench's sizes are whole MiB): 1MiB, 256MiB, 5.2MiB."""
    return f"{n // MiB}MiB" if n % MiB == 0 else f"{n / MiB:.1f}MiB"


def print_comparisons(title: str, comparisons: Sequence[Comparison]) -> None:
    """A table (size, both medians, both throughputs, ratio, target) followed by the ratio lines."""
    print(f"\n== {title}")
    print(f"{'label':<34} {'size':>9} {'subject':>11} {'baseline':>11} {'subj MB/s':>10} {'base MB/s':>10} "
          f"{'ratio':>7}  target")
    for c in comparisons:
        target = "-" if c.target is None else f">={c.target:.2f} {'met' if c.met else 'SHORT'}"
        size, subject_mbps, baseline_mbps = (format_size(c.nbytes), f"{mbps(c.nbytes, c.subject_median):.0f}",
                                             f"{mbps(c.nbytes, c.baseline_median):.0f}") if c.nbytes else ("-", "-", "-")
        print(f"{c.label:<34} {size:>9} {fmt_s(c.subject_median):>11} {fmt_s(c.baseline_median):>11} "
              f"{subject_mbps:>10} {baseline_mbps:>10} {c.ratio:>7.3f}  {target}")
    for c in comparisons:
        print(c.line())


def machine() -> dict[str, Any]:
    """Where, when and how the bench ran: date, host, cores, torch, device and the command line."""
    info: dict[str, Any] = {"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
                            "command": " ".join([os.path.basename(sys.executable), *sys.argv]),
                            "host": platform.node(), "platform": platform.platform(),
                            "python": platform.python_version(), "cpus": os.cpu_count()}
    try:
        import torch

        info["torch"] = torch.__version__
        info["cuda"] = torch.cuda.is_available()
        info["device"] = torch.cuda.get_device_name(0) if info["cuda"] else "cpu (no GPU)"
    except ImportError:
        info["device"] = "cpu (no torch)"
    return info


def write_results(out_dir: str | os.PathLike, stem: str, rows: Sequence[Mapping[str, Any]],
                  meta: Mapping[str, Any], raw: Any = None) -> tuple[str, str]:
    """``out_dir/stem.csv`` (the rows) and ``out_dir/stem.json`` (meta, rows, raw data); returns both paths."""
    os.makedirs(out_dir, exist_ok=True)
    csv_path, json_path = os.path.join(out_dir, f"{stem}.csv"), os.path.join(out_dir, f"{stem}.json")
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    with open(json_path, "w") as f:
        json.dump({"meta": dict(meta), "rows": list(rows), "raw": raw}, f, indent=2, default=str)
    return csv_path, json_path


def write_markdown_table(path: str | os.PathLike, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """A Markdown table: ``header`` names the columns, each row holds already formatted cells."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


def write_comparisons(out_dir: str | os.PathLike, stem: str, comparisons: Sequence[Comparison],
                      meta: Mapping[str, Any]) -> tuple[str, str]:
    """``write_results`` of comparisons, their per-repeat times kept in the JSON."""
    raw = {c.label: {"subject_s": c.subject_s, "baseline_s": c.baseline_s} for c in comparisons}
    return write_results(out_dir, stem, [c.row() for c in comparisons], meta, raw)


def numbers(text: str, kind: type) -> list:
    """A command-line list of positive numbers of ``kind``, comma-separated; argparse's error otherwise."""
    try:
        out = [kind(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    if not out or any(not 0 < x < float("inf") for x in out):  # nan and inf included
        raise argparse.ArgumentTypeError(f"expected positive numbers, got {text!r}")
    return out


def seeds(text: str) -> list[int]:
    """A command-line list of seeds (integers >= 0), comma-separated; argparse's error naming it otherwise."""
    try:
        out = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated seeds, got {text!r}") from None
    if not out or any(x < 0 for x in out):
        raise argparse.ArgumentTypeError(f"expected seeds >= 0, got {text!r}")
    return out


def exit_status(main: Callable[[], int | None]) -> int:
    """A bench's exit status: ``main()``'s, or 2 with one line saying what was wrong where it stopped on a
    ValueError or OSError (a bad setting, a missing or empty trace), as run_search and ``tensorcache`` do."""
    try:
        return main() or 0
    except (OSError, ValueError) as exc:
        print(f"{os.path.basename(sys.argv[0])}: error: {exc}", file=sys.stderr)
        return 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def redis_url(given: str | None = None, required: bool = True) -> Iterator[str | None]:
    """``given``, else $TENSORCACHE_TEST_REDIS_URL, else a redis-server started on a free loopback port
    (no persistence, in a temporary folder) and stopped when the block ends; where none is installed, an error,
    or None when not ``required``."""
    url = given or os.environ.get("TENSORCACHE_TEST_REDIS_URL")
    if url:
        import redis

        try:
            redis.Redis.from_url(url, socket_connect_timeout=2).ping()
        except redis.RedisError as exc:  # named here: a part using it would end in redis-py's traceback
            raise ConnectionError(f"redis at {url} does not answer: {exc}") from None
        yield url
        return
    binary = shutil.which("redis-server")
    if binary is None and not required:
        yield None
        return
    if binary is None:
        raise FileNotFoundError("redis-server is not installed; pass --redis URL or install it (apt-get install "
                                "redis-server)")
    import redis

    with tempfile.TemporaryDirectory(prefix="bench-redis-") as workdir:
        for _ in range(5):  # another process may take the port between choosing and binding it
            port = _free_port()
            proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                     "--appendonly", "no", "--dir", workdir],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                if _answers(redis.Redis(port=port, socket_connect_timeout=0.2), proc):
                    yield f"redis://127.0.0.1:{port}/0"
                    return
            finally:
                proc.kill()
                proc.wait()
    raise RuntimeError("could not start redis-server on a free loopback port")


def _answers(client: Any, proc: subprocess.Popen, timeout: float = 10.0) -> bool:
    """Whether the server answers PING within ``timeout`` while its process lives."""
    import redis

    deadline = time.monotonic() + timeout
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                return bool(client.ping())
            except redis.ConnectionError:
                time.sleep(0.02)
        return False
    finally:
        client.close()


HIDDEN_C_LINES: dict[str, int] = {}  # lines a C library printed to stderr inside ``c_stderr_hidden``, by library


@contextlib.contextmanager
def c_stderr_hidden(library: str) -> Iterator[None]:
    """Send file descriptor 2, where C libraries print their warnings, to a temporary file while the block
    runs, and count the lines in ``HIDDEN_C_LINES[library]`` (a bench reports the count once at its end)."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            lines = sink.read().count(b"\n")
            if lines:
                HIDDEN_C_LINES[library] = HIDDEN_C_LINES.get(library, 0) + lines
