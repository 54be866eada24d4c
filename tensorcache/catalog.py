"""Model records and the layer-key index that answers "the best donor for this child".

A record lists, per layer, the layer key and the payload references of its tensors. The index maps
each layer key to the models holding that layer *somewhere in the cache*, so lookup only ever proposes
layers that can be served. Records arrive from untrusted shared stores, so parsing validates them.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .payload import PayloadError, check_meta

MAX_LAYERS = 100_000


@dataclass(frozen=True)
class TensorRef:
    """Where one named tensor's payload lives and what it must look like."""

    digest: bytes
    dtype: str
    shape: tuple[int, ...]
    nbytes: int


@dataclass(frozen=True)
class LayerRecord:
    key: bytes
    tensors: dict[str, TensorRef]
    deps: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        return sum(t.nbytes for t in self.tensors.values())


@dataclass(frozen=True)
class ModelRecord:
    model_id: str
    arch: tuple[int, ...]
    score: float | None
    parent: str | None
    layers: tuple[LayerRecord, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "model_id": self.model_id, "arch": list(self.arch), "score": self.score, "parent": self.parent,
            "layers": [
                {"key": layer.key.hex(), "deps": list(layer.deps),
                 "tensors": {n: {"digest": t.digest.hex(), "dtype": t.dtype, "shape": list(t.shape),
                                 "nbytes": t.nbytes} for n, t in layer.tensors.items()}}
                for layer in self.layers
            ],
        }

    @classmethod
    def from_json(cls, obj: Any, max_nbytes: int = 2**40) -> ModelRecord:
        """Parse and validate a record; PayloadError on anything malformed."""
        try:
            layers = []
            if not isinstance(obj["layers"], list) or len(obj["layers"]) > MAX_LAYERS:
                raise PayloadError("bad layer list")
            for layer in obj["layers"]:
                tensors = {}
                for name, t in layer["tensors"].items():
                    _, shape, nbytes = check_meta(t["dtype"], t["shape"], t["nbytes"], max_nbytes)
                    tensors[str(name)] = TensorRef(_hex16(t["digest"]), t["dtype"], shape, nbytes)
                layers.append(LayerRecord(_hex16(layer["key"]), tensors, tuple(int(d) for d in layer["deps"])))
            score = obj["score"]
            parent = obj["parent"]
            return cls(str(obj["model_id"]), tuple(int(a) for a in obj["arch"]),
                       None if score is None else float(score), None if parent is None else str(parent),
                       tuple(layers))
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:  # Overflow: int(Infinity)
            if isinstance(exc, PayloadError):
                raise
            raise PayloadError(f"malformed model record: {exc!r}") from None


def _hex16(text: Any) -> bytes:
    raw = bytes.fromhex(text)
    if len(raw) != 16:
        raise PayloadError("bad 128-bit key")
    return raw


def encode_event(event: dict[str, Any]) -> bytes:
    return json.dumps(event, separators=(",", ":")).encode()


def decode_event(raw: bytes) -> dict[str, Any]:
    try:
        event = json.loads(raw)
    except RecursionError:  # a nesting bomb from a hostile writer of the shared log
        raise PayloadError("log event nests too deeply") from None
    if not isinstance(event, dict):
        raise PayloadError("log event is not an object")
    return event


class Catalog:
    """Known models and, per layer key, which models hold that layer in some tier."""

    def __init__(self) -> None:
        self.models: dict[str, ModelRecord] = {}
        self._by_key: dict[bytes, dict[str, int]] = {}
        self._held: dict[str, set[int]] = {}
        self._pinned: set[str] = set()

    def pin(self, model_id: str) -> None:
        """Keep the record while it is being stored, even if its first layers get evicted meanwhile."""
        self._pinned.add(model_id)

    def unpin(self, model_id: str) -> None:
        self._pinned.discard(model_id)
        if not self._held.get(model_id) and model_id in self.models:
            self._held.pop(model_id, None)
            del self.models[model_id]

    def add(self, record: ModelRecord) -> None:
        self.models[record.model_id] = record
        self._held.setdefault(record.model_id, set())

    def hold(self, model_id: str, index: int) -> None:
        """Mark layer ``index`` of ``model_id`` as servable (present in at least one tier)."""
        key = self.models[model_id].layers[index].key
        self._by_key.setdefault(key, {})[model_id] = index
        self._held[model_id].add(index)

    def release(self, model_id: str, index: int) -> None:
        """Layer left every tier; forget the model once none of its layers is held."""
        record = self.models.get(model_id)
        if record is None:
            return
        holders = self._by_key.get(record.layers[index].key)
        if holders is not None:
            holders.pop(model_id, None)
            if not holders:
                del self._by_key[record.layers[index].key]
        held = self._held[model_id]
        held.discard(index)
        if not held and model_id not in self._pinned:
            del self._held[model_id]
            del self.models[model_id]

    def find(self, keys: Sequence[bytes], parent: str | None, mode: str) -> tuple[str, list[tuple[int, int]]] | None:
        """Best single donor and its [(child layer, donor layer)] pairs, or None.

        prefix: the longest unbroken run of matching held layers from layer 0; compatible: the most
        matching held layers anywhere. Ties go to ``parent``, then to the better score, then model id.
        """
        if mode == "prefix":
            cands = self._by_key.get(keys[0]) if keys else None
            if not cands:
                return None
            cands = dict(cands)
            depth = 1
            for key in keys[1:]:
                nxt = self._by_key.get(key)
                if not nxt:
                    break
                common = cands.keys() & nxt.keys()
                if not common:
                    break
                cands = {m: nxt[m] for m in common}
                depth += 1
            donor = self._pick(cands, parent)
            return donor, self._pairs(donor, keys[:depth])
        counts: dict[str, int] = {}
        for key in keys:
            for m in self._by_key.get(key, ()):
                counts[m] = counts.get(m, 0) + 1
        if not counts:
            return None
        best = max(counts.values())
        donor = self._pick({m for m, c in counts.items() if c == best}, parent)
        return donor, self._pairs(donor, keys)

    def _pairs(self, donor: str, keys: Sequence[bytes]) -> list[tuple[int, int]]:
        out = []
        for j, key in enumerate(keys):
            holders = self._by_key.get(key)
            if holders and donor in holders:
                out.append((j, holders[donor]))
        return out

    def _pick(self, cands, parent: str | None) -> str:
        if parent is not None and parent in cands:
            return parent

        def rank(m: str) -> tuple[float, str]:
            score = self.models[m].score
            return (-(score if score is not None else float("-inf")), m)

        return min(cands, key=rank)
