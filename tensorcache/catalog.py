"""Model records, and the catalog: which tier holds which entry (the one owner of residency in a process)
and the layer-key index that answers "the best donor for this child".

A record lists, per layer, the layer key and the payload references of its tensors. The index maps each
layer key to the models holding that layer in some tier, so lookup only proposes layers that can be
served. Records also arrive from shared stores other processes write, so parsing validates them.

A shared tier stores a record in format 2, packed binary (``RECORD_MAGIC``, then fixed-size fields, see
``ModelRecord.encoded``), which a process opening a cache parses in a few microseconds per model. Records
of format 1 (JSON, written by earlier versions) are still read, so an existing store needs no migration.
"""
from __future__ import annotations

import functools
import json
from bisect import bisect_left, insort
import math
import struct
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, NamedTuple

from .payload import DTYPES, MAX_NDIM, PayloadError, check_meta, header

Entry = tuple[str, int]  # (model_id, layer index): one layer of one stored model, the unit tiers hold
MAX_LAYERS = 100_000
KINDS = ("numpy", "torch")  # what a tensor was when it was put, and is again when it is served
MODES = ("prefix", "compatible")
RECORD_MAGIC = b"TCR\x02"  # format 2 of a stored model record
# a dtype's code in a format-2 record is its position here: append only
DTYPE_CODES = ("float16", "bfloat16", "float32", "float64", "int8", "uint8", "int16", "int32", "int64", "bool",
               "complex64")
_DTYPE_INDEX = {name: code for code, name in enumerate(DTYPE_CODES)}
_ITEMSIZE = tuple(DTYPES[name].itemsize for name in DTYPE_CODES)
# magic, score (NaN: none), mode, model id bytes, parent bytes + 1 (0: no parent), arch length, layer count
_HEAD = struct.Struct("<4sdBIIII")
_LAYER = struct.Struct("<16sII")  # key, dependency count, tensor count
_TENSOR = struct.Struct("<16sIBBBQ")  # digest, name bytes, dtype code, kind code, dimensions, nbytes
_TENSOR_FIELDS = struct.Struct("<IBBBQ")  # the same less the digest


class TensorRef(NamedTuple):
    """Where one named tensor's payload lives, what it must look like, and the kind it was put as (a named
    tuple: a put makes one per tensor, hundreds per model)."""

    digest: bytes
    dtype: str
    shape: tuple[int, ...]
    nbytes: int
    kind: str = "numpy"

    @property
    def blob_size(self) -> int:
        """Length of the stored payload (canonical header + data), known before reading it."""
        return stored_length(self.dtype, self.shape, self.nbytes)


def stored_length(dtype: str, shape: tuple[int, ...], nbytes: int) -> int:
    """Length of a tensor's stored payload: its canonical header, then its ``nbytes`` of data."""
    return len(header(dtype, shape, nbytes)) + nbytes


TensorEntry = tuple[str, bytes, str, tuple[int, ...], int, str]  # a tensor's name, then TensorRef's fields


class LayerRecord:
    """One stored layer: its key, its tensors by name, and the arch positions it depends on.

    A long search keeps hundreds of thousands of these, so each is one object the cyclic collector tracks:
    its tensors are kept as ``refs``, plain tuples ``(name, digest, dtype, shape, nbytes, kind)`` that hold
    only strings, bytes and ints (the collector stops tracking such tuples the first time it sees them),
    not as a dict of ``TensorRef``s, which it would track for as long as the layer is held."""

    __slots__ = ("key", "refs", "depends_on", "digests", "sizes", "blob_bytes")
    key: bytes
    refs: tuple[TensorEntry, ...]  # in the order the tensors were given
    depends_on: tuple[int, ...]
    digests: tuple[bytes, ...]  # its payloads' keys, in order
    sizes: tuple[int, ...]  # their stored lengths, in order
    blob_bytes: int  # bytes its payloads take in a tier

    def __init__(self, key: bytes, tensors: Mapping[str, TensorRef], depends_on: tuple[int, ...]) -> None:
        self._fill(key, tuple([(name, *t) for name, t in tensors.items()]), depends_on)

    @classmethod
    def of(cls, key: bytes, refs: tuple[TensorEntry, ...], depends_on: tuple[int, ...],
           sizes: tuple[int, ...] | None = None) -> LayerRecord:
        """A layer from its tensors as ``refs`` entries already (a put and a record's parser make them so);
        ``sizes``: their payloads' stored lengths when the caller holds the payloads (a put), else worked out."""
        layer = cls.__new__(cls)
        layer._fill(key, refs, depends_on, sizes)
        return layer

    def _fill(self, key: bytes, refs: tuple[TensorEntry, ...], depends_on: tuple[int, ...],
              sizes: tuple[int, ...] | None = None) -> None:
        self.key, self.refs, self.depends_on = key, refs, depends_on
        self.digests = tuple([r[1] for r in refs])
        self.sizes = sizes if sizes is not None else \
            tuple([stored_length(dtype, shape, nbytes) for _, _, dtype, shape, nbytes, _ in refs])
        self.blob_bytes = sum(self.sizes)

    @property
    def tensors(self) -> dict[str, TensorRef]:
        """Its tensors by name as ``TensorRef``s (made on each call, for callers that want them by field)."""
        return {r[0]: TensorRef(*r[1:]) for r in self.refs}

    @property
    def nbytes(self) -> int:
        return sum([r[4] for r in self.refs])

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, LayerRecord):
            return NotImplemented
        return (self.key, self.refs, self.depends_on) == (other.key, other.refs, other.depends_on)

    __hash__ = None  # type: ignore[assignment]  # equal by content, and not meant as a key

    def __repr__(self) -> str:
        return f"LayerRecord(key={self.key!r}, tensors={self.tensors!r}, depends_on={self.depends_on!r})"


@dataclass(frozen=True)
class ModelRecord:
    """A stored model: id, arch, score (None: unknown; ranks last), parent and layers."""

    model_id: str
    arch: tuple[int, ...]
    score: float | None
    parent: str | None
    layers: tuple[LayerRecord, ...]
    mode: str = "prefix"

    @property
    def nbytes(self) -> int:
        return sum(layer.nbytes for layer in self.layers)

    @cached_property
    def entries(self) -> tuple[Entry, ...]:
        """Its entries ``(model_id, layer index)``, made once: the catalog, the policies and the decoded layers
        kept all key by these same tuples rather than each by an equal one of its own (fewer objects)."""
        return tuple([(self.model_id, index) for index in range(len(self.layers))])

    def same_tensors(self, other: ModelRecord) -> bool:
        """Whether ``other`` describes the same model content: architecture, mode, and every layer's key and
        payloads (score and parent may differ)."""
        return (self.model_id, self.arch, self.mode) == (other.model_id, other.arch, other.mode) and \
            [(layer.key, layer.refs) for layer in self.layers] == [(layer.key, layer.refs) for layer in other.layers]

    @cached_property
    def encoded(self) -> bytes:
        """The record in format 2, made once (a shared tier stores it with the model's first entry)."""
        mid = self.model_id.encode()
        parent = b"" if self.parent is None else self.parent.encode()
        score = math.nan if self.score is None else self.score
        parts = [_HEAD.pack(RECORD_MAGIC, score, MODES.index(self.mode), len(mid),
                            0 if self.parent is None else len(parent) + 1, len(self.arch), len(self.layers)),
                 mid, parent, _ints("q", len(self.arch)).pack(*self.arch)]
        for layer in self.layers:
            parts += [_LAYER.pack(layer.key, len(layer.depends_on), len(layer.refs)),
                      _ints("I", len(layer.depends_on)).pack(*layer.depends_on)]
            for name, digest, dtype, shape, nbytes, kind in layer.refs:
                raw_name = name.encode()
                parts.append(_tensor_entry(len(raw_name), len(shape)).pack(
                    digest, len(raw_name), _DTYPE_INDEX[dtype], KINDS.index(kind), len(shape), nbytes, raw_name,
                    *shape))
        return b"".join(parts)

    @classmethod
    def from_bytes(cls, raw: bytes | bytearray | memoryview, max_nbytes: int = 2**40) -> ModelRecord:
        """Parse and validate a stored record (format 2, or format 1 JSON; any bytes-like object); PayloadError on
        anything malformed."""
        if type(raw) is not bytes:
            raw = bytes(raw)
        if raw[:4] == RECORD_MAGIC:
            return cls._from_packed(raw, max_nbytes)
        return cls._from_json(raw, max_nbytes)

    @classmethod
    def _from_packed(cls, raw: bytes, max_nbytes: int) -> ModelRecord:
        try:
            _, score, mode, id_len, parent_len, arch_len, n_layers = _HEAD.unpack_from(raw)
            if not 0 < arch_len <= MAX_LAYERS or n_layers > MAX_LAYERS or mode >= len(MODES):
                raise PayloadError(f"bad record header (arch {arch_len}, layers {n_layers}, mode {mode})")
            at = _HEAD.size + id_len
            model_id = raw[_HEAD.size:at].decode()
            parent = None if parent_len == 0 else raw[at:at + parent_len - 1].decode()
            at += max(0, parent_len - 1)
            arch = _ints("q", arch_len).unpack_from(raw, at)
            at += 8 * arch_len
            if min(arch) < 0:
                raise PayloadError(f"arch values must be ints in 0..{MAX_ARCH_VALUE}, got {min(arch)}")
            layers = []
            for _ in range(n_layers):
                key, n_deps, n_tensors = _LAYER.unpack_from(raw, at)
                at += _LAYER.size
                if n_deps > MAX_LAYERS:
                    raise PayloadError(f"a layer depends on {n_deps} positions")
                deps = _ints("I", n_deps).unpack_from(raw, at)
                at += 4 * n_deps
                refs: list[TensorEntry] = []
                sizes = []
                for _ in range(n_tensors):
                    digest, name_len, _, _, ndim, _ = _TENSOR.unpack_from(raw, at)
                    end = at + _TENSOR.size + name_len + 8 * ndim
                    name, dtype, shape, nbytes, kind, size = _tensor_meta(raw[at + 16:end], max_nbytes)
                    at = end
                    refs.append((name, digest, dtype, shape, nbytes, kind))
                    sizes.append(size)
                if n_tensors > 1 and len({r[0] for r in refs}) != n_tensors:
                    names = [r[0] for r in refs]
                    raise PayloadError(f"tensor name {next(n for n in names if names.count(n) > 1)!r} repeated")
                layers.append(LayerRecord.of(key, tuple(refs), deps, tuple(sizes)))
            if at != len(raw) or len(model_id) != id_len and len(model_id.encode()) != id_len:
                raise PayloadError(f"record of {len(raw)} bytes does not end where its fields do ({at})")
        except (struct.error, UnicodeDecodeError, ValueError, OverflowError, MemoryError) as exc:
            if isinstance(exc, PayloadError):
                raise
            raise PayloadError(f"malformed model record: {exc!r:.200}") from None
        return cls(model_id, arch, None if math.isnan(score) else score, parent, tuple(layers), MODES[mode])

    @classmethod
    def _from_json(cls, raw: bytes, max_nbytes: int) -> ModelRecord:
        try:
            obj = json.loads(raw)
            layers = []
            if not isinstance(obj["layers"], list) or len(obj["layers"]) > MAX_LAYERS:
                raise PayloadError("bad layer list")
            for layer in obj["layers"]:
                tensors = {}
                for name, t in layer["tensors"].items():
                    _, shape, nbytes = check_meta(t["dtype"], t["shape"], t["nbytes"], max_nbytes)
                    kind = t.get("kind", "numpy")
                    if kind not in KINDS:
                        raise PayloadError(f"unknown tensor kind {kind!r}")
                    tensors[str(name)] = TensorRef(_hex16(t["digest"]), t["dtype"], shape, nbytes, kind)
                layers.append(LayerRecord(_hex16(layer["key"]), tensors, tuple(int(d) for d in layer["deps"])))
            score, parent, mode = obj["score"], obj["parent"], obj.get("mode", "prefix")
            if score is not None and math.isnan(float(score)):
                score = None
            if mode not in MODES:
                raise PayloadError(f"unknown mode {mode!r}")
            return cls(str(obj["model_id"]), check_arch(obj["arch"]), None if score is None else float(score),
                       None if parent is None else str(parent), tuple(layers), mode)
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError, RecursionError) as exc:
            if isinstance(exc, PayloadError):
                raise
            raise PayloadError(f"malformed model record: {exc!r:.200}") from None


@functools.lru_cache(maxsize=256)
def _ints(code: str, count: int) -> struct.Struct:
    """The little-endian struct of ``count`` values of ``code`` (memoised: records repeat a few lengths)."""
    return struct.Struct(f"<{count}{code}")


@functools.lru_cache(maxsize=1024)
def _tensor_entry(name_bytes: int, ndim: int) -> struct.Struct:
    """One tensor's whole entry in a format-2 record: ``_TENSOR``'s fields, its name, its shape (one pack
    per tensor; a record of a few hundred tensors is made on every put into a shared tier)."""
    return struct.Struct(f"{_TENSOR.format}{name_bytes}s{ndim}Q")


@functools.lru_cache(maxsize=4096)
def _tensor_meta(fields: bytes, max_nbytes: int) -> tuple[str, str, tuple[int, ...], int, str, int]:
    """A format-2 tensor entry less its digest (its fixed fields, name and shape) parsed and validated: (name,
    dtype, shape, nbytes, kind, stored length of its payload); PayloadError if malformed. Memoised: the tensors
    of a search's models repeat a few names and shapes, so opening a store of 10^5 layers parses each once."""
    name_len, dtype_code, kind_code, ndim, nbytes = _TENSOR_FIELDS.unpack_from(fields)
    if dtype_code >= len(DTYPE_CODES) or kind_code >= len(KINDS) or ndim > MAX_NDIM:
        raise PayloadError(f"unknown dtype or kind code, or too many dimensions ({dtype_code}, {kind_code}, {ndim})")
    at = _TENSOR_FIELDS.size
    name = fields[at:at + name_len].decode()
    shape = _ints("Q", ndim).unpack_from(fields, at + name_len)
    dtype = DTYPE_CODES[dtype_code]
    if nbytes > max_nbytes or math.prod(shape) * _ITEMSIZE[dtype_code] != nbytes \
            or (shape and max(shape) > max_nbytes):
        raise PayloadError(f"shape {shape} of {dtype} does not make {nbytes} bytes (limit {max_nbytes})")
    if len(name.encode()) != name_len:
        raise PayloadError(f"tensor name {name!r} cut")
    return name, dtype, shape, nbytes, KINDS[kind_code], stored_length(dtype, shape, nbytes)


MAX_ARCH_VALUE = 2**63 - 1  # what a key's signed 64-bit field encodes


def check_arch(arch: Any) -> tuple[int, ...]:
    """``arch`` as a tuple of ints in 0..2^63-1; ValueError naming it unless it is a non-empty sequence of
    such ints (bools, strings, floats that are not whole, inf and NaN are refused)."""
    if isinstance(arch, (str, bytes)) or not isinstance(arch, Iterable):
        raise ValueError(f"arch must be a non-empty sequence of non-negative ints, got {arch!r:.200}")
    if type(arch) is tuple and 0 < len(arch) <= MAX_LAYERS \
            and all(type(v) is int and 0 <= v <= MAX_ARCH_VALUE for v in arch):
        return arch  # the common case, checked at once
    out = []
    for value in arch:
        if len(out) == MAX_LAYERS:  # checked while reading: an endless iterable is refused, not exhausted
            raise ValueError(f"arch has more than {MAX_LAYERS} positions: {arch!r:.200}")
        if isinstance(value, (bool, str, bytes)) or type(value).__name__ == "bool_":
            raise ValueError(f"arch values must be ints, got {value!r} in {arch!r:.200}")
        try:
            as_int = int(value)
            whole = float(value) == float(as_int) if not isinstance(value, int) else True
        except (TypeError, ValueError, OverflowError):
            raise ValueError(f"arch values must be ints, got {value!r} in {arch!r:.200}") from None
        if not whole or not 0 <= as_int <= MAX_ARCH_VALUE:
            raise ValueError(f"arch values must be ints in 0..{MAX_ARCH_VALUE}, got {value!r} in {arch!r:.200}")
        out.append(as_int)
    if not out:
        raise ValueError(f"arch must be a non-empty sequence of non-negative ints, got {arch!r:.200}")
    return tuple(out)


def _bits(mask: int) -> list[int]:
    """The positions of the set bits of ``mask``, lowest first."""
    if mask < len(_SMALL_MASKS):
        return list(_SMALL_MASKS[mask])
    return [i for i in range(mask.bit_length()) if mask >> i & 1]


_SMALL_MASKS = tuple(tuple(i for i in range(4) if mask >> i & 1) for mask in range(16))  # a stack has at most 4 tiers


def _hex16(text: Any) -> bytes:
    raw = bytes.fromhex(text)
    if len(raw) != 16:
        raise PayloadError("bad 128-bit key")
    return raw


def rank(score: float | None) -> float:
    """Sort key of a donor's score, lower first: higher scores first (``inf`` first of all), unknown and NaN
    scores last together with ``-inf``; ties go to the model id, so every process that sees the same models
    picks the same donor (a record keeps ``inf`` as it was put)."""
    return math.inf if score is None or math.isnan(score) else -score


class Catalog:
    """Known models, which tiers hold each entry, and per layer key which models hold that layer."""

    def __init__(self) -> None:
        self.models: dict[str, ModelRecord] = {}
        # entry -> bit i set when tier i holds it (an int, not a set per entry: fewer objects for the collector)
        self._tiers: dict[Entry, int] = {}
        self._held: dict[str, int] = {}  # model -> how many of its entries some tier holds
        self._by_key: dict[bytes, dict[str, int]] = {}  # layer key -> {model: its layer index}
        # layer key -> its holders' donor order, best first (prefix search stops at the first full donor); only
        # for keys two or more models hold: most keys of deep layers have one holder, and need no list
        self._ranked: dict[bytes, list[tuple[float, str]]] = {}
        self._order: dict[str, tuple[float, str]] = {}  # held model -> its place in that order (one tuple)

    def hold(self, record: ModelRecord, index: int, tier: int) -> bool:
        """Tier ``tier`` holds layer ``index`` of ``record``; True if it did not before."""
        entry = self.models.get(record.model_id, record).entries[index]
        tiers = self._tiers.get(entry)
        if tiers is None:
            tiers = 0
            model_id, key = record.model_id, record.layers[index].key
            known = self.models.setdefault(model_id, record)
            if model_id not in self._held:
                self._held[model_id] = 0
                self._order[model_id] = (rank(known.score), model_id)
            self._held[model_id] += 1
            holders = self._by_key.get(key)
            if holders is None:
                holders = self._by_key[key] = {}
            if model_id not in holders and holders:  # a second or later holder: the key's donor order
                if len(holders) == 1:
                    self._ranked[key] = sorted([self._order[next(iter(holders))], self._order[model_id]])
                else:
                    insort(self._ranked[key], self._order[model_id])
            holders[model_id] = index
        elif tiers >> tier & 1:
            return False
        self._tiers[entry] = tiers | 1 << tier
        return True

    def release(self, entry: Entry, tier: int) -> bool:
        """Tier ``tier`` no longer holds ``entry``; True if it was held there. A model is forgotten when
        no tier holds any of its layers."""
        tiers = self._tiers.get(entry)
        if tiers is None or not tiers >> tier & 1:
            return False
        tiers &= ~(1 << tier)
        if tiers:
            self._tiers[entry] = tiers
        else:
            del self._tiers[entry]
            model_id, index = entry
            record = self.models[model_id]
            key = record.layers[index].key
            holders = self._by_key.get(key)
            if holders is not None and holders.get(model_id) == index:
                del holders[model_id]
                if len(holders) == 1:  # one holder left: no order to keep
                    del self._ranked[key]
                elif holders:
                    ranked = self._ranked[key]
                    del ranked[bisect_left(ranked, self._order[model_id])]
                else:
                    del self._by_key[key]
            self._held[model_id] -= 1
            if not self._held[model_id]:
                del self._held[model_id], self.models[model_id], self._order[model_id]
        return True

    def holds(self, entry: Entry, tier: int) -> bool:
        """Whether tier ``tier`` holds ``entry``."""
        return bool(self._tiers.get(entry, 0) >> tier & 1)

    def tiers_of(self, entry: Entry) -> list[int]:
        """Indices of the tiers holding ``entry``, fastest first."""
        return _bits(self._tiers.get(entry, 0))

    def held_in(self, tiers: Iterable[int]) -> list[Entry]:
        """The entries that any of ``tiers`` holds."""
        mask = sum(1 << t for t in set(tiers))
        return [entry for entry, held in self._tiers.items() if held & mask]

    def record(self, model_id: str) -> ModelRecord | None:
        return self.models.get(model_id)

    def find(self, keys: Sequence[bytes], parent: str | None, mode: str, skip: Collection[str] = ()
             ) -> tuple[str, list[tuple[int, int]]] | None:
        """Best single donor and its [(child layer, donor layer)] pairs, or None; the models in ``skip`` are
        not candidates (donors a lookup could not read).

        prefix: the longest unbroken run of matching held layers from layer 0; compatible: the most
        matching held layers anywhere. Ties go to ``parent``, then to the better score, then model id.
        """
        if mode == "prefix":
            by_key = self._by_key
            runs = [by_key.get(k) for k in keys]
            end = next((j for j, holders in enumerate(runs) if not holders), len(keys))  # no donor goes deeper
            for depth in range(end, 0, -1):  # deepest first; at each depth the first full donor in order wins
                shallower = runs[:depth - 1]
                if parent is not None and parent in runs[depth - 1] and parent not in skip \
                        and all(parent in h for h in shallower):
                    return parent, self._pairs(parent, keys[:depth])
                ranked = self._ranked.get(keys[depth - 1])
                for m in runs[depth - 1] if ranked is None else (m for _, m in ranked):  # None: one holder
                    if m not in skip and all(m in h for h in shallower):
                        return m, self._pairs(m, keys[:depth])
            return None
        counts: dict[str, int] = {}
        for key in keys:
            for m in self._by_key.get(key, ()):
                if m not in skip:
                    counts[m] = counts.get(m, 0) + 1
        if not counts:
            return None
        best = max(counts.values())
        donor = self._pick([m for m, c in counts.items() if c == best], parent)
        return donor, self._pairs(donor, keys)

    def _pairs(self, donor: str, keys: Sequence[bytes]) -> list[tuple[int, int]]:
        out = []
        for j, key in enumerate(keys):
            holders = self._by_key.get(key)
            if holders and donor in holders:
                out.append((j, holders[donor]))
        return out

    def _pick(self, cands: Sequence[str], parent: str | None) -> str:
        if parent is not None and parent in cands:
            return parent
        return min(cands, key=self._order.__getitem__)

    def check(self) -> list[str]:
        """Problems with the catalog's own invariants (empty when whole)."""
        problems = []
        counts: dict[str, int] = {}
        for (model_id, index), tiers in self._tiers.items():
            if tiers <= 0:
                problems.append(f"{model_id}[{index}] is held by no tier but still listed")
            if model_id not in self.models:
                problems.append(f"{model_id}[{index}] is held but its model is unknown")
            counts[model_id] = counts.get(model_id, 0) + 1
        if counts != self._held:
            problems.append("held-entry counts disagree with the entries")
        if set(self.models) != set(counts):
            problems.append("models known without held entries, or the reverse")
        if self._ranked.keys() != {key for key, holders in self._by_key.items() if len(holders) > 1} or any(
                ranked != sorted(self._order.get(m, (math.nan, m)) for m in self._by_key[key])
                for key, ranked in self._ranked.items()):
            problems.append("a layer key's donor order disagrees with its holders")
        return problems

