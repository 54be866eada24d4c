"""What put and lookup report: the entries stored, and one donor's servable layers as the kind that was put."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .catalog import LayerRecord
from .transfer import Layer, TransferReport, copy_layers


@dataclass(frozen=True)
class Stored:
    """What ``put`` did: per layer its key, the bytes it takes in a tier and the arch positions it depends
    on; ``written``: payload bytes newly written (0 for a model id already known)."""

    model_id: str
    keys: list[bytes]
    layer_bytes: list[int]
    depends_on: list[tuple[int, ...]]
    written: int


@dataclass
class Hit:
    """One donor's servable layers for a child: ``served[k]`` belongs to child layer ``indices[k]``, came
    from tier ``tiers[k]`` and has key ``keys[k]`` and ``layer_bytes[k]`` payload bytes. ``slowest_tier``
    is the slowest tier any layer came from."""

    donor: str
    prefix_len: int
    indices: list[int]
    served: list[Layer] = field(repr=False)  # the cache's own decoded layers: read only (``layers`` is safe)
    records: list[LayerRecord] = field(repr=False)  # each served layer as the catalog holds it
    nbytes: int
    slowest_tier: str
    seconds: float
    tiers: list[str] = field(default_factory=list, repr=False)
    prefix: bool = True  # a prefix hit: no layer after the first misfit is copied (a later one needs it)
    on_apply: Callable[[float], None] | None = field(default=None, repr=False, compare=False)  # the cache's clock

    @property
    def keys(self) -> list[bytes]:
        """Each served layer's key."""
        return [record.key for record in self.records]

    @property
    def layer_bytes(self) -> list[int]:
        """The bytes each served layer's payloads take in a tier."""
        return [record.blob_bytes for record in self.records]

    @property
    def kinds(self) -> list[dict[str, str]]:
        """Per served layer, tensor name -> "numpy" or "torch": the kind it was put as (read only when asked:
        a warm start copies without it)."""
        return [{name: kind for name, _, _, _, _, kind in record.refs} for record in self.records]

    @property
    def layers(self) -> list[dict[str, Any]]:
        """Each served layer's tensors by name as the kind and dtype that was put, never aliasing what the cache
        keeps: torch tensors (bfloat16 included) for torch input are copies, numpy arrays for numpy input are
        read-only views (numpy refuses writes), so changing a served tensor never changes a later hit."""
        return [_as_kinds(layer, kinds) for layer, kinds in zip(self.served, self.kinds)]

    @property
    def dtypes(self) -> list[dict[str, str]]:
        """Each served layer's dtype names by tensor name."""
        return [dict(layer.dtypes) for layer in self.served]

    def tensors(self) -> dict[str, tuple[Any, str]]:
        """All served tensors, name -> (tensor as put, dtype name)."""
        return {n: (t, layer.dtypes[n]) for layer, ts in zip(self.served, self.layers) for n, t in ts.items()}

    def state_dict(self) -> dict[str, Any]:
        """Every served tensor by name, as the kind and dtype that was put, copied: the caller owns them
        (e.g. for ``module.load_state_dict``)."""
        # ``layers`` copies torch tensors already; its numpy arrays are read-only views, copied here
        return {n: t.copy() if hasattr(t, "flags") else t for ts in self.layers for n, t in ts.items()}

    def apply(self, module: Any, cast: bool = True, strict: bool = False) -> TransferReport:
        """Copy the served layers that fit ``module`` into it (``TensorCache.warm_start`` is lookup + this).
        Every layer is checked before any is copied, and a layer is copied whole or not at all; a layer
        that does not fit (a name, shape or dtype) is left out and named in ``report.skipped``, and in a
        prefix hit so is every layer after it. ``strict``: TransferError naming each misfit instead, and
        nothing copied. Floating-point tensors of another dtype than the module's are cast (named in
        ``report.casts``) unless ``cast`` is False, which makes them misfits."""
        misfits = "raise" if strict else "stop" if self.prefix else "skip"
        report, _ = copy_layers(module, self.served, misfits, cast=cast)
        report.donor, report.tier, report.lookup_seconds = self.donor, self.slowest_tier, self.seconds
        if self.on_apply is not None:
            self.on_apply(report.seconds)
        return report


def _as_kinds(layer: Layer, kinds: dict[str, str]) -> dict[str, Any]:
    """``layer``'s tensors, each as the kind it was put as: torch tensors are copies (torch cannot make a
    tensor read-only, and one a caller writes to must not change what the cache serves next)."""
    out = {}
    torch_views = None
    for name, arr in layer.arrays.items():
        torch_input = kinds.get(name) == "torch"
        on_device = not hasattr(arr, "flags")  # a device tier serves torch tensors
        if torch_input and not on_device:
            if torch_views is None:
                views = layer.views()
                torch_views = dict(zip(views.names, views.tensors))
            out[name] = torch_views[name].clone()
        elif not torch_input and on_device:
            out[name] = arr.to("cpu", copy=True).numpy()
        elif on_device:
            out[name] = arr.clone()
        else:
            out[name] = arr
    return out
