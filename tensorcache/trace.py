"""Search traces: one JSON object per evaluation, appended and flushed as each evaluation finishes.

Benchmarks and analyses read traces back (``read_trace``), so a recorded search can be replayed under any
eviction policy and cache size: each record carries the model's layer keys and real per-layer bytes.
A crash loses at most the record being written; ``read_trace`` skips a torn last line.
"""
from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from typing import Any

log = logging.getLogger("tensorcache")

FIELDS: tuple[str, ...] = (
    "model_id", "parent_id", "donor_id", "worker", "t_start", "t_end", "arch", "mutation_pos", "score",
    "transfer_layers", "transfer_bytes", "tier", "cache_s", "train_s", "layer_bytes", "layer_keys",
)


class TraceWriter:
    """Append trace records to a JSON-lines file, one flushed line per record."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = os.fspath(path)
        parent = os.path.dirname(self.path)
        if parent:
            os.makedirs(parent, exist_ok=True)
        self._file = open(self.path, "a", encoding="utf-8")
        self.count = 0

    def write(self, record: Mapping[str, Any]) -> None:
        """Append ``record``; raise ValueError naming any of ``FIELDS`` it lacks."""
        missing = [f for f in FIELDS if f not in record]
        if missing:
            raise ValueError(f"trace record lacks fields {missing}")
        self._file.write(json.dumps(record, separators=(",", ":"), allow_nan=False) + "\n")
        self._file.flush()
        self.count += 1

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> TraceWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_trace(path: str | os.PathLike) -> list[dict[str, Any]]:
    """All records of a trace file in order; a torn (unterminated, unparsable) last line is skipped."""
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            if number == len(lines):  # no newline after it: the writer died mid-line
                log.warning("%s: skipping a torn last record", path)
                break
            raise ValueError(f"{path}:{number}: not a JSON trace record ({exc})") from None
        if not isinstance(record, dict):
            raise ValueError(f"{path}:{number}: trace record is {type(record).__name__}, not an object")
        records.append(record)
    return records
