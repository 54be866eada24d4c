"""Continuing an interrupted search from the trace in its output folder (``run_search --resume``).

The search is run again from its seed; each child the trace already holds is answered with its recorded
result (no training, no cache call) and not written again, every other child runs as usual. Under a
deterministic evaluator and executor (the tabular evaluator on the serial executor) the resumed search
issues, scores and picks exactly what the uninterrupted search would have.
"""
from __future__ import annotations

import json
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from tensorcache.evolution import Candidate
from tensorcache.trace import TraceRecord, TraceWriter, read_records

from .evaluators import Evaluator, Started

if TYPE_CHECKING:
    from .settings import SearchSettings
    from tensorcache import LayerMap, TensorCache
    from tensorcache.hit import Stored

__all__ = ["Recorded", "SkipWritten", "finished_records", "previous_run_id"]

# settings a resumed search may change: the budget, the threads, and how the output folder is treated
FREE_TO_CHANGE = {"evals", "overwrite", "resume", "threads"}


@contextmanager
def ctrl_c_after() -> Iterator[None]:
    """Hold off Ctrl-C (SIGINT) until the block ends, so that a finished child is written to the trace and
    counted in the summary together or not at all; outside the main thread, a plain block."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGINT) is None:
        yield  # only the main thread sets handlers; None: a handler set outside Python, left as it is
        return
    caught: list[tuple[int, Any]] = []
    before = signal.signal(signal.SIGINT, lambda signum, frame: caught.append((signum, frame)))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, before)
        if caught:
            if callable(before):
                before(*caught[0])
            elif before == signal.SIG_DFL:
                os.kill(os.getpid(), signal.SIGINT)


def finished_records(out: str, name: str = "trace.jsonl") -> list[TraceRecord]:
    """The records of ``out/trace.jsonl`` (or ``name``), rewritten without a torn last line so that appending
    stays valid."""
    path = os.path.join(out, name)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--resume: no search to continue in {out!r} (no trace.jsonl there)")
    records = read_records(path)
    with open(path, "w", encoding="utf-8"):
        pass
    with TraceWriter(path) as writer:
        for record in records:
            writer.write(record)
    return records


def previous_run_id(out: str) -> str | None:
    """The run id of the search in ``out``: its summary's, else the prefix of its first model id."""
    summary = _summary(out)
    if isinstance(summary.get("settings"), dict) and summary["settings"].get("run_id"):
        return str(summary["settings"]["run_id"])
    try:
        records = read_records(os.path.join(out, "trace.jsonl"))
    except OSError:
        return None
    return records[0].model_id.rsplit("-", 1)[0] if records and "-" in records[0].model_id else None


def check_same_search(s: SearchSettings) -> None:
    """Raise ValueError naming each setting that differs from the interrupted search's (from its summary)."""
    before = _summary(s.out).get("settings")
    if not isinstance(before, dict):
        return  # a search killed before its summary: its model ids still tie the trace to the run id
    now, before = _flat(json.loads(json.dumps(asdict(s), default=str))), _flat(before)
    changed = [f"{key}: {before.get(key)!r} in {s.out}, {now.get(key)!r} now" for key in sorted(set(now) | set(before))
               if key.split(".")[0] not in FREE_TO_CHANGE and now.get(key) != before.get(key)]
    if changed:
        raise ValueError(f"--resume: the search in {s.out!r} ran with other settings; give the same options "
                         f"(differs: {'; '.join(changed)})")


def _flat(settings: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``settings`` with each nested object's values under dotted names (``cache_config.memory``), so that a
    difference names the one setting, not the whole object."""
    out: dict[str, Any] = {}
    for key, value in settings.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _summary(out: str) -> dict[str, Any]:
    try:
        with open(os.path.join(out, "summary.json")) as f:
            summary = json.load(f)
    except (OSError, ValueError):
        return {}
    return summary if isinstance(summary, dict) else {}


class Recorded(Evaluator):
    """``inner`` for children the trace does not hold; a held child gets a copy of its recorded result."""

    def __init__(self, inner: Evaluator, records: list[TraceRecord]) -> None:
        self.inner = inner
        self.name = inner.name
        self.payload_scale = inner.payload_scale
        self.records = {r.model_id: r.to_dict() for r in records}

    def _recorded(self, candidate: Candidate) -> TraceRecord | None:
        values = self.records.get(candidate.model_id)
        if values is None:
            return None
        if list(values["arch"]) != list(candidate.arch):
            raise ValueError(f"--resume: the trace's {candidate.model_id} has arch {values['arch']}, the search "
                             f"issued {list(candidate.arch)}; resume with the options of the interrupted search")
        return TraceRecord.from_dict(values)

    def check(self) -> None:
        self.inner.check()

    def setup(self) -> None:
        self.inner.setup()

    def evaluate(self, candidate: Candidate, cache: TensorCache | None) -> TraceRecord:
        record = self._recorded(candidate)
        return self.inner.evaluate(candidate, cache) if record is None else record

    def start(self, candidate: Candidate, cache: TensorCache | None) -> Started:
        record = self._recorded(candidate)
        if record is None:
            return self.inner.start(candidate, cache)
        return Started(candidate, record.t_end - record.t_start, record)

    def finish(self, started: Started, cache: TensorCache | None) -> TraceRecord:
        if isinstance(started.state, TraceRecord) and started.state.model_id in self.records:
            return started.state
        return self.inner.finish(started, cache)

    def donor(self, candidate: Candidate, cache: TensorCache) -> str | None:
        return self.inner.donor(candidate, cache)

    def layer_map(self, arch: tuple[int, ...]) -> LayerMap:
        return self.inner.layer_map(arch)

    def record(self, candidate: Candidate, layer_map: LayerMap, layer_bytes: list[int], stored: Stored | None,
               **measured: Any) -> TraceRecord:
        return self.inner.record(candidate, layer_map, layer_bytes, stored, **measured)

    def describe(self) -> dict[str, Any]:
        return self.inner.describe()


class SkipWritten:
    """The trace writer of a resumed search: records the trace already holds are not written again."""

    def __init__(self, writer: TraceWriter, written: set[str]) -> None:
        self.writer, self.written = writer, set(written)

    def write(self, record: TraceRecord) -> None:
        if record.model_id in self.written:
            self.written.discard(record.model_id)
            return
        self.writer.write(record)
