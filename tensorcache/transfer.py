"""Copy cached tensors into a torch module: everything validated first, then copied, or nothing.

A model has hundreds of small tensors, so the per-tensor Python work of a warm start costs more than
the bytes it moves; this module keeps it off the hot path:

* the module's targets (parameters and persistent buffers by state_dict name) are resolved once per
  module and re-validated on each use by the identity of every entry on their paths, in one pass in C
  (resolving them again whenever a name is missing), at a fraction of the cost of ``state_dict()``;
* a served ``Layer`` builds its torch views once, and the cache keeps layers of process-local tiers;
* validation compares whole lists of shapes and dtypes; copies are one ``torch._foreach_copy_`` per dtype.

Host tensors bound for a CUDA module go through one pinned staging buffer: one ``torch.cat`` per dtype
packs them, one host-to-device copy moves them, one call per dtype splits them into views on the device.
Tensors already on the module's device (a device tier) are copied device to device.
"""
from __future__ import annotations

import time
import warnings
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from operator import attrgetter, is_
from typing import Any

import numpy as np

from .wrappers import with_plain_names


class TransferError(ValueError):
    """The cached tensors do not fit the module; nothing was copied."""


@dataclass
class TransferReport:
    """What a warm start did."""

    layers: int = 0
    nbytes: int = 0
    seconds: float = 0.0
    skipped: list[str] = field(default_factory=list)
    casts: list[str] = field(default_factory=list)  # "name: bfloat16 -> float32" for each tensor cast
    donor: str | None = None
    tier: str | None = None
    lookup_seconds: float = 0.0


@dataclass(frozen=True, eq=False)
class _Views:
    """Torch views of one layer's tensors, ordered by dtype; tensors without elements come last and are
    validated but not copied (``groups`` covers the others: (dtype, start, stop, elements))."""

    names: list[str]
    tensors: list[Any]
    shapes: list[Any]
    dtypes: list[Any]
    keys: frozenset[str]
    groups: list[tuple[Any, int, int, int]]
    on_host: bool
    nbytes: int

    @classmethod
    def of(cls, arrays: Mapping[str, Any], dtypes: Mapping[str, str]) -> _Views:
        """The views of a layer's arrays, in one pass per step (a layer of an uncached tier gets new views on
        every hit, so each tensor's share of this is part of a warm start's cost)."""
        import torch

        from_numpy, ndarray = torch.from_numpy, np.ndarray
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # read-only numpy views are never written through
            by_name = {n: from_numpy(a) if isinstance(a, ndarray) else a for n, a in arrays.items()}
        if "bfloat16" in dtypes.values():  # travels as uint16
            for n, a in arrays.items():
                if dtypes[n] == "bfloat16" and isinstance(a, ndarray):
                    by_name[n] = by_name[n].view(torch.bfloat16)
        numels = {n: t.numel() for n, t in by_name.items()}
        # by dtype name, which orders as the torch dtype does (str(torch.float32) is "torch." + "float32")
        names = sorted(by_name, key=lambda n: (numels[n] == 0, dtypes[n]))
        tensors = [by_name[n] for n in names]
        dtypes_in_order = [t.dtype for t in tensors]
        groups: list[tuple[Any, int, int, int]] = []
        for i, (name, dtype) in enumerate(zip(names, dtypes_in_order)):
            numel = numels[name]
            if numel == 0:
                break
            if groups and groups[-1][0] == dtype:
                _, start, _, total = groups[-1]
                groups[-1] = (dtype, start, i + 1, total + numel)
            else:
                groups.append((dtype, i, i + 1, numel))
        return cls(names, tensors, [t.shape for t in tensors], dtypes_in_order, frozenset(names), groups,
                   all([t.is_cpu for t in tensors]), sum([t.nbytes for t in tensors]))

    @cached_property
    def flat(self) -> list[Any]:
        """1-d views of ``tensors`` (what the staging buffer is packed from)."""
        return [t.reshape(-1) for t in self.tensors]


class Layer:
    """One served layer: tensors by name (numpy views of host payloads, or tensors on a device tier's
    device) and their dtype names. Its torch views are built on first use and kept with it."""

    __slots__ = ("arrays", "dtypes", "nbytes", "_views")

    def __init__(self, arrays: dict[str, Any], dtypes: dict[str, str], nbytes: int | None = None) -> None:
        """``nbytes``: the arrays' bytes when the caller knows them already (a read knows its record's)."""
        self.arrays, self.dtypes = arrays, dtypes
        self.nbytes: int = sum([a.nbytes for a in arrays.values()]) if nbytes is None else nbytes
        self._views: _Views | None = None

    def views(self) -> _Views:
        if self._views is None:
            self._views = _Views.of(self.arrays, self.dtypes)
        return self._views


# ------------------------------------------------------------------------------------------- targets
_TARGETS: weakref.WeakKeyDictionary[Any, tuple[dict[str, Any], tuple[list, list, list]]] = (
    weakref.WeakKeyDictionary())  # module -> its targets and its links as (containers, names, entries)


def targets(module: Any, fresh: bool = False) -> dict[str, Any]:
    """``module``'s parameters and persistent buffers by state_dict name (shared between calls: read only).

    Reused while every parameter, buffer and submodule entry on the way to them is still the same object
    (setattr, register_*, del and ``load_state_dict(assign=True)`` replace entries; ``.to()`` and
    ``.data =`` change an entry's data in place, which its shape and dtype checks see); ``fresh`` resolves
    them again, which also finds entries added since."""
    cached = None if fresh else _TARGETS.get(module)
    if cached is not None:
        found, (containers, names, objs) = cached
        if all(map(is_, map(dict.get, containers, names), objs)):  # one pass in C over every link
            return found
    found, links = _walk(module)
    _TARGETS[module] = (found, tuple(map(list, zip(*links))) if links else ([], [], []))
    return found


def _walk(module: Any) -> tuple[dict[str, Any], list[tuple[dict, str, Any]]]:
    """What state_dict(keep_vars=True) names (each also without the wrapper prefix of ``nn.DataParallel``,
    DDP or ``torch.compile``), and every (container, name, entry) it went through."""
    found: dict[str, Any] = {}
    links: list[tuple[dict, str, Any]] = []
    stack = [("", module)]
    while stack:
        prefix, m = stack.pop()
        params, buffers, children = m._parameters, m._buffers, m._modules
        for name, t in params.items():
            links.append((params, name, t))
            if t is not None:
                found[prefix + name] = t
        for name, t in buffers.items():
            links.append((buffers, name, t))
            if t is not None and name not in m._non_persistent_buffers_set:
                found[prefix + name] = t
        for name, child in children.items():
            links.append((children, name, child))
            if child is not None:
                stack.append((f"{prefix}{name}.", child))
    return with_plain_names(found), links


_SHAPE, _IS_META, _DTYPE = attrgetter("shape"), attrgetter("is_meta"), attrgetter("dtype")


def _match(found: Mapping[str, Any], views: _Views, cast: bool) -> tuple[list[Any], list[str]] | None:
    """The module's tensors for ``views.names`` in order and the casts copying into them takes ("name:
    bfloat16 -> float32"), or None if any name, shape, dtype (floating point ones are cast when ``cast``)
    or device (meta: no storage) misfits."""
    if not found.keys() >= views.keys:
        return None
    dst = list(map(found.__getitem__, views.names))  # each map below reads one attribute per tensor in C
    if list(map(_SHAPE, dst)) != views.shapes or any(map(_IS_META, dst)):
        return None
    dtypes = list(map(_DTYPE, dst))
    if dtypes == views.dtypes:
        return dst, []
    if not cast or not all(a == b or (a.is_floating_point and b.is_floating_point)
                           for a, b in zip(dtypes, views.dtypes)):
        return None
    return dst, [f"{n}: {_name(s)} -> {_name(d)}" for n, s, d in zip(views.names, views.dtypes, dtypes) if s != d]


def _name(dtype: Any) -> str:
    return str(dtype).removeprefix("torch.")


def _problems(found: Mapping[str, Any], views: _Views, cast: bool) -> list[str]:
    """Why a layer does not fit, one line per misfit tensor."""
    problems = []
    for name, shape, dtype in zip(views.names, views.shapes, views.dtypes):
        target = found.get(name)
        if target is None:
            problems.append(f"{name}: no such parameter or buffer in the module")
        elif target.shape != shape:
            problems.append(f"{name}: shape {tuple(shape)} does not match the module's {tuple(target.shape)}")
        elif target.is_meta:
            problems.append(f"{name}: the module's tensor is on the meta device, with no storage to copy into "
                            "(materialise the module first, e.g. module.to_empty(device='cpu'))")
        elif target.dtype != dtype and not (cast and target.dtype.is_floating_point and dtype.is_floating_point):
            problems.append(f"{name}: dtype {_name(dtype)} does not match the module's {_name(target.dtype)}"
                            + ("" if cast else " (cast=False)"))
    return problems


# -------------------------------------------------------------------------------------------- copying
def copy_layers(module: Any, layers: Sequence[Layer], misfits: str = "raise",
                staged: bool | None = None, cast: bool = True) -> tuple[TransferReport, list[int]]:
    """Copy the layers that fit ``module`` in one batch; returns the report and the positions copied.

    ``misfits``: "raise": TransferError naming every misfit, nothing copied; "skip": leave misfit layers
    out (named in ``report.skipped``); "stop": also leave out every layer after the first misfit.
    ``staged``: send host tensors through one packed staging buffer and one copy (None: only when the
    module is on a CUDA device, where that saves a host-to-device copy per tensor).
    ``cast``: copy a floating-point tensor into a module tensor of another floating-point dtype, as
    ``load_state_dict`` does (named in ``report.casts``); False leaves such a layer out as a misfit.
    """
    if misfits not in ("raise", "skip", "stop"):
        raise ValueError(f"misfits must be 'raise', 'skip' or 'stop', got {misfits!r}")
    t0 = time.perf_counter()
    views = [layer.views() for layer in layers]
    found = targets(module)
    dsts = [_match(found, v, cast) for v in views]
    if None in dsts:  # a name may have been added since the targets were resolved: look again
        found = targets(module, fresh=True)
        dsts = [_match(found, v, cast) for v in views]
    kept, skipped, casts = [], [], []
    for k, dst in enumerate(dsts):
        if dst is None:
            skipped += _problems(found, views[k], cast)
            if misfits == "stop":
                break
        else:
            kept.append(k)
            casts += dst[1]
    if skipped and misfits == "raise":
        raise TransferError("; ".join(skipped))
    nbytes = _copy([(views[k], dsts[k][0]) for k in kept], staged)
    return TransferReport(layers=len(kept), nbytes=nbytes, seconds=time.perf_counter() - t0, skipped=skipped,
                          casts=casts), kept


def copy_into(module: Any, tensors: Mapping[str, tuple[Any, str]]) -> TransferReport:
    """Validate every tensor (name -> (array or tensor, dtype name)) against ``module``, then copy all of
    them; TransferError if any misfits."""
    layer = Layer({n: a for n, (a, _) in tensors.items()}, {n: d for n, (_, d) in tensors.items()})
    return copy_layers(module, [layer])[0]


def _copy(pairs: list[tuple[_Views, list[Any]]], staged: bool | None = None) -> int:
    """Copy each layer's views into its module tensors; returns bytes copied."""
    import torch

    if not pairs:
        return 0
    # staged to the device of the module's first tensor; tensors elsewhere get foreach's per-tensor copies
    device = next((dst[0].device for _, dst in pairs if dst), torch.device("cpu"))
    if staged is None:
        staged = device.type == "cuda"
    through_buffer = [p for p in pairs if p[0].on_host] if staged else []
    direct = [p for p in pairs if not p[0].on_host] if through_buffer else pairs
    with torch.no_grad():
        for dst, src, _ in _by_dtype(direct).values():
            torch._foreach_copy_(dst, src)
        if through_buffer:
            _copy_staged(through_buffer, device)
    return sum(v.nbytes for v, _ in pairs)


def _by_dtype(pairs: list[tuple[_Views, list[Any]]], flat: bool = False) -> dict[Any, tuple[list, list, int]]:
    """Module tensors and their sources grouped by dtype (the fast foreach route needs one dtype per
    list), and each group's element count; ``flat`` gives 1-d sources."""
    out: dict[Any, tuple[list, list, int]] = {}
    for views, dst in pairs:
        src = views.flat if flat else views.tensors
        for dtype, start, stop, numel in views.groups:
            d, s, n = out.get(dtype) or ([], [], 0)
            d += dst[start:stop]
            s += src[start:stop]
            out[dtype] = (d, s, n + numel)
    return out


class Stager:
    """Reusable host buffer for host-to-device transfers, pinned where CUDA is available (grows, never shrinks)."""

    def __init__(self) -> None:
        self._buf = None

    def buffer(self, nbytes: int):
        import torch

        if self._buf is None or self._buf.numel() < nbytes:
            self._buf = torch.empty(max(nbytes, 1), dtype=torch.uint8, pin_memory=torch.cuda.is_available())
        return self._buf[:nbytes]


_STAGER = Stager()
_ALIGN = 64


def _copy_staged(pairs: list[tuple[_Views, list[Any]]], device: Any) -> None:
    """One staging buffer packed per dtype (``torch.cat``), one copy to ``device``, views split off there
    (one call per dtype), one ``_foreach_copy_`` per dtype."""
    import torch
    from torch._utils import _unflatten_dense_tensors

    groups = _by_dtype(pairs, flat=True)
    spans, offset = [], 0
    for dtype, (_, _, numel) in groups.items():
        nbytes = numel * dtype.itemsize
        spans.append((offset, nbytes))
        offset += -(-nbytes // _ALIGN) * _ALIGN  # every region starts aligned for its dtype
    staging = _STAGER.buffer(offset)
    for (dtype, (_, flat, _)), (start, n) in zip(groups.items(), spans):
        torch.cat(flat, out=staging[start : start + n].view(dtype))
    on_device = staging.to(device, non_blocking=True)
    for (dtype, (dst, _, _)), (start, n) in zip(groups.items(), spans):
        torch._foreach_copy_(dst, _unflatten_dense_tensors(on_device[start : start + n].view(dtype), dst))
    if device.type == "cuda":
        torch.cuda.current_stream(device).synchronize()  # the staging buffer is reused by the next call
