"""Search traces: one JSON object per evaluation, appended and flushed as each evaluation finishes.

``TraceRecord`` is the one schema of a trace line: the writer's required fields (``FIELDS``), the reader's
validation and the columns analyses and replays read all come from it. Each line carries ``version``;
lines without one are version 1 (written before the field existed) and read with the newer fields at their
defaults (``revisit`` computed from the trace); lines before version 3 call ``layers_served`` and
``bytes_served`` ``transfer_layers`` and ``transfer_bytes`` and read under the new names (``RENAMED``); a
line of a newer version than this reader knows is an error naming it. A crash loses at most the record being written; ``read_trace`` skips a torn last line.
"""
from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

from .layers import MODES
from .metrics import mark_revisits

log = logging.getLogger("tensorcache")

TRACE_VERSION = 3  # 1: no version, test, tier_bytes or revisit fields; 2: transfer_layers and transfer_bytes
# for what 3 calls layers_served and bytes_served; 3: all of TraceRecord
RENAMED = {"transfer_layers": "layers_served", "transfer_bytes": "bytes_served"}  # version < 3 name -> name
MAX_LINE = 2**24  # characters a trace line may have (a record is a few hundred; a longer line is not one)


def _int(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise TypeError(f"expected an int, got {v!r}")
    return v


def _float(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise TypeError(f"expected a number, got {v!r}")
    return float(v)


def _str(v: Any) -> str:
    if not isinstance(v, str):
        raise TypeError(f"expected a string, got {v!r}")
    return v


def _bool(v: Any) -> bool:
    if not isinstance(v, bool):
        raise TypeError(f"expected true or false, got {v!r}")
    return v


def _worker(v: Any) -> int | str:
    return v if isinstance(v, str) else _int(v)


def _optional(check: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return lambda v: None if v is None else check(v)


def _list(check: Callable[[Any], Any]) -> Callable[[Any], list]:
    def checked(v: Any) -> list:
        if not isinstance(v, list):
            raise TypeError(f"expected a list, got {v!r}")
        return [check(x) for x in v]
    return checked


def _counts(v: Any) -> dict[str, int]:
    if not isinstance(v, dict):
        raise TypeError(f"expected an object of byte counts, got {v!r}")
    return {_str(k): _int(n) for k, n in v.items()}


def _column(check: Callable[[Any], Any], default: Any = MISSING, factory: Any = MISSING) -> Any:
    """A TraceRecord field and the check (and coercion) its JSON value passes on read and write."""
    return field(default=default, default_factory=factory, metadata={"check": check})


@dataclass
class TraceRecord:
    """One evaluation as a trace records it; fields without a default are required in every version."""

    model_id: str = _column(_str)
    parent_id: str | None = _column(_optional(_str))
    donor_id: str | None = _column(_optional(_str))  # the model the cache served layers from (None: miss)
    worker: int | str = _column(_worker)
    t_start: float = _column(_float)  # seconds since the search started, on the executor's clock
    t_end: float = _column(_float)
    arch: list[int] = _column(_list(_int))
    mutation_pos: int | None = _column(_optional(_int))
    score: float | None = _column(_optional(_float))
    layers_served: int = _column(_int)  # layers the cache served this evaluation (a revisit's included)
    bytes_served: int = _column(_int)  # their real bytes, even where the cache held scaled-down payloads
    tier: str | None = _column(_optional(_str))  # the slowest tier that served the transfer
    cache_s: float = _column(_float)
    train_s: float = _column(_float)
    layer_bytes: list[int] = _column(_list(_int))  # each layer of this model, in layer order
    layer_keys: list[str] = _column(_list(_str))  # hex layer keys, as the cache keys them
    layer_deps: list[list[int]] | None = _column(_optional(_list(_list(_int))), None)  # arch positions per layer
    test: float | None = _column(_optional(_float), None)
    tier_bytes: dict[str, int] = _column(_counts, factory=dict)  # bytes_served by the tier that served them
    # the same arch was evaluated before: an evaluation of it started earlier (tensorcache.metrics.mark_revisits;
    # None: not known when written, ``read_records`` computes it from the trace)
    revisit: bool | None = _column(_optional(_bool), None)
    epochs: float | None = _column(_optional(_float), None)  # this evaluation's own training, in epochs
    # training behind the layers it received: the donor's own plus the donor's inherited training, along the
    # lineage (0 for a cold start; None: not known, e.g. the donor's record had not reached the search yet)
    inherited_epochs: float | None = _column(_optional(_float), None)
    inherited_seconds: float | None = _column(_optional(_float), None)
    version: int = _column(_int, TRACE_VERSION)
    extra: dict[str, Any] = field(default_factory=dict)  # evaluator-specific values, written as top-level keys

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of one trace line (``extra`` flattened into it)."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        clash = set(self.extra) & set(out)
        if clash:
            raise ValueError(f"trace record {self.model_id}: extra values {sorted(clash)} shadow record fields")
        return {**out, **self.extra}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> TraceRecord:
        """Validate one trace line; ValueError names a missing field, a bad value or an unknown version."""
        version = values.get("version", 1)
        if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= TRACE_VERSION:
            raise ValueError(f"trace record has version {version!r}; this tensorcache reads versions 1 to "
                             f"{TRACE_VERSION} (a newer tensorcache wrote it?)")
        if version < 3:
            values = {RENAMED.get(k, k): v for k, v in values.items()}
        missing = [name for name in FIELDS if name not in values]
        if missing:
            raise ValueError(f"trace record lacks fields {missing}")
        checked: dict[str, Any] = {"version": version}
        for f in fields(cls):
            if f.name in values and f.name not in ("extra", "version"):
                try:
                    checked[f.name] = f.metadata["check"](values[f.name])
                except TypeError as exc:
                    raise ValueError(f"trace record field {f.name}: {exc}") from None
        names = {f.name for f in fields(cls)}
        record = cls(**checked, extra={k: v for k, v in values.items() if k not in names})
        record.check()
        return record

    def check(self) -> None:
        """ValueError naming what breaks a record's own consistency: one key, size and dependency list per
        layer, no negative size, an end not before the start, a finite training time."""
        keys, sizes, deps = len(self.layer_keys), len(self.layer_bytes), self.layer_deps
        if keys != sizes or (deps is not None and len(deps) != keys):
            raise ValueError(f"trace record {self.model_id}: {keys} layer keys vs {sizes} layer bytes"
                             + ("" if deps is None else f" vs {len(deps)} layer_deps"))
        if any(b < 0 for b in self.layer_bytes):
            raise ValueError(f"trace record {self.model_id}: negative layer bytes {self.layer_bytes[:8]}")
        if self.t_end < self.t_start:
            raise ValueError(f"trace record {self.model_id}: t_end {self.t_end} < t_start {self.t_start}")
        if not 0 <= self.train_s < math.inf:
            raise ValueError(f"trace record {self.model_id}: train_s must be a finite number >= 0, got {self.train_s}")


FIELDS: tuple[str, ...] = tuple(f.name for f in fields(TraceRecord)
                                if f.default is MISSING and f.default_factory is MISSING)


class TraceWriter:
    """Append trace records to a JSON-lines file, one flushed line per record."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = os.fspath(path)
        parent = os.path.dirname(self.path)
        if parent:
            os.makedirs(parent, exist_ok=True)
        self._file = open(self.path, "a", encoding="utf-8")
        self.count = 0

    def write(self, record: TraceRecord | Mapping[str, Any]) -> None:
        """Append ``record`` (a mapping is validated as a TraceRecord first: ValueError names what is wrong)."""
        if not isinstance(record, TraceRecord):
            record = TraceRecord.from_dict({"version": TRACE_VERSION, **record})
        self._file.write(json.dumps(record.to_dict(), separators=(",", ":"), allow_nan=False) + "\n")
        self._file.flush()
        self.count += 1

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> TraceWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_records(path: str | os.PathLike, max_line: int | None = None) -> list[TraceRecord]:
    """All records of a trace file in order, validated; a torn (unterminated, unparsable) last line is skipped.
    ValueError naming the file and line for a line over ``max_line`` (default ``MAX_LINE``) characters (never
    read whole), nesting too deep to parse, or a record that is not one."""
    max_line = MAX_LINE if max_line is None else max_line
    records = []
    with open(path, encoding="utf-8") as f:
        line, number = f.readline(max_line + 1), 1
        while line:
            following = f.readline(max_line + 1)
            if len(line) > max_line:
                raise ValueError(f"{path}:{number}: a line longer than {max_line} characters is not a trace record")
            if line.strip():
                values = _parse(line, path, number, last=not following)
                if values is None:
                    break
                try:
                    records.append(TraceRecord.from_dict(values))
                except ValueError as exc:
                    raise ValueError(f"{path}:{number}: {exc}") from None
            line, number = following, number + 1
    _fill_revisits(records)
    return records


def _parse(line: str, path: str | os.PathLike, number: int, last: bool) -> dict[str, Any] | None:
    """One line's JSON object; None for a torn last line (no newline: the writer died mid-line)."""
    try:
        values = json.loads(line)
    except json.JSONDecodeError as exc:
        if last and not line.endswith("\n"):
            log.warning("%s: skipping a torn last record", path)
            return None
        raise ValueError(f"{path}:{number}: not a JSON trace record ({exc})") from None
    except RecursionError:
        raise ValueError(f"{path}:{number}: a trace record nested too deeply to read") from None
    if not isinstance(values, dict):
        raise ValueError(f"{path}:{number}: trace record is {type(values).__name__}, not an object")
    return values


def read_trace(path: str | os.PathLike) -> list[dict[str, Any]]:
    """``read_records`` as plain dicts (``TraceRecord.to_dict``), for callers that index records by name."""
    return [record.to_dict() for record in read_records(path)]


def as_records(records: Iterable[TraceRecord | Mapping[str, Any]]) -> list[TraceRecord]:
    """Trace records from records or trace lines' objects (validated: ValueError names the bad one), with
    ``revisit`` set as ``read_records`` sets it: what analyses and replays take."""
    out = []
    for n, record in enumerate(records):
        try:
            out.append(record if isinstance(record, TraceRecord) else TraceRecord.from_dict(record))
        except ValueError as exc:
            raise ValueError(f"trace record {n}: {exc}") from None
    _fill_revisits(out)
    return out


def _fill_revisits(records: list[TraceRecord]) -> None:
    """Set ``revisit`` where the writer did not (version 1), by the one rule of ``metrics.mark_revisits``."""
    if all(r.revisit is not None for r in records):
        return
    flags = mark_revisits((str(n), r.arch, r.t_start, r.revisit) for n, r in enumerate(records))
    for n, record in enumerate(records):
        record.revisit = flags[str(n)]


# summary.json's counts as written before they were named for the bytes they count -> their names now
SUMMARY_RENAMED = {"transfer_bytes": "bytes_served", "transfer_only_bytes": "transfer_bytes_served",
                   "revisit_bytes": "revisit_bytes_served", "transfer_layers": "layers_served"}


def read_summary(trace_path: str | os.PathLike) -> dict[str, Any]:
    """The run summary beside a trace (``summary.json``, {} if none or unreadable; the keys tensorcache reads
    are listed in docs/architecture.md), an older one's counts under their names now (``SUMMARY_RENAMED``)."""
    path = os.path.join(os.path.dirname(os.fspath(trace_path)), "summary.json")
    try:
        with open(path, encoding="utf-8") as f:
            summary = json.load(f)
    except (OSError, ValueError):
        return {}
    if not isinstance(summary, dict):
        return {}
    if "transfer_only_bytes" in summary:  # written before the renames
        summary = {SUMMARY_RENAMED.get(k, k): v for k, v in summary.items()}
    return summary


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# the run settings analysis and replay read from a summary, and what each must be
SETTING_KINDS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "population": (_count, "a count >= 1"), "sample": (_count, "a count >= 1"), "window": (_count, "a count >= 1"),
    "mutation_bias": (_finite, "a finite number"), "control": (_finite, "a finite number"),
    "transfer": (lambda v: v in MODES, " or ".join(map(repr, MODES))),
}


def checked_setting(name: str, value: Any, where: str = "settings") -> Any:
    """``value`` of setting ``name`` (found at ``where`` in summary.json) if it is None or of its kind in
    ``SETTING_KINDS``, else None with one warning naming it (a hand-edited file): the reader then infers it or
    takes its default."""
    ok, kind = SETTING_KINDS[name]
    if value is None or ok(value):
        return value
    log.warning("summary.json: %s.%s is %r, not %s; not used", where, name, value, kind)
    return None


def summary_settings(summary: Mapping[str, Any]) -> dict[str, Any]:
    """A run summary's ``settings`` ({} if none), each one of ``SETTING_KINDS`` left out when ``checked_setting``
    refuses it."""
    settings = summary.get("settings")
    if not isinstance(settings, dict):
        return {}
    kept = dict(settings)
    for name in SETTING_KINDS:
        if kept.get(name) is not None and checked_setting(name, kept[name]) is None:
            del kept[name]
    return kept
