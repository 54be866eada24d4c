"""Copy cached tensors into a torch module: everything validated first, then copied, or nothing.

On a CUDA target all tensors go through one pinned, contiguous staging buffer: one host-to-device copy
of the whole transfer, then device-side copies into the parameters (per-tensor pageable copies cost far
more than the bytes they move).
"""
from __future__ import annotations

import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np


class TransferError(ValueError):
    """The cached tensors do not fit the module; nothing was copied."""


@dataclass
class TransferReport:
    """What a warm start did."""

    layers: int = 0
    nbytes: int = 0
    seconds: float = 0.0
    skipped: list[str] = field(default_factory=list)
    donor: str | None = None
    tier: str | None = None
    lookup_seconds: float = 0.0


def _torch_dtype_name(t: Any) -> str:
    return str(t.dtype).removeprefix("torch.")


def check(module: Any, tensors: Mapping[str, tuple[np.ndarray, str]]) -> list[str]:
    """Reasons why ``tensors`` (name -> (array, dtype name)) cannot be copied into ``module``."""
    state = module.state_dict(keep_vars=True)
    problems = []
    for name, (arr, dtype) in tensors.items():
        target = state.get(name)
        if target is None:
            problems.append(f"{name}: no such parameter or buffer in the module")
        elif tuple(target.shape) != tuple(arr.shape):
            problems.append(f"{name}: shape {tuple(arr.shape)} does not match the module's {tuple(target.shape)}")
        elif _torch_dtype_name(target) != dtype:
            problems.append(f"{name}: dtype {dtype} does not match the module's {_torch_dtype_name(target)}")
    return problems


class Stager:
    """Reusable pinned host buffer for host-to-device transfers (grows, never shrinks)."""

    def __init__(self) -> None:
        self._buf = None

    def buffer(self, nbytes: int):
        import torch

        if self._buf is None or self._buf.numel() < nbytes:
            self._buf = torch.empty(max(nbytes, 1), dtype=torch.uint8, pin_memory=True)
        return self._buf[:nbytes]


_STAGER = Stager()
_ALIGN = 64


def _as_torch(arr: np.ndarray, dtype: str):
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # read-only views are never written through
        t = torch.from_numpy(arr)
    return t.view(torch.bfloat16) if dtype == "bfloat16" else t


def copy_into(module: Any, tensors: Mapping[str, tuple[np.ndarray, str]]) -> TransferReport:
    """Validate every tensor against ``module``, then copy all of them; TransferError if any misfits."""
    import torch

    t0 = time.perf_counter()
    problems = check(module, tensors)
    if problems:
        raise TransferError("; ".join(problems))
    state = module.state_dict(keep_vars=True)
    on_cuda = [(n, v) for n, v in tensors.items() if state[n].device.type == "cuda"]
    on_host = [(n, v) for n, v in tensors.items() if state[n].device.type != "cuda"]
    nbytes = 0
    with torch.no_grad():
        for name, (arr, dtype) in on_host:
            state[name].copy_(_as_torch(arr, dtype))
            nbytes += arr.nbytes
        if on_cuda:
            nbytes += _copy_cuda(state, on_cuda)
    return TransferReport(nbytes=nbytes, seconds=time.perf_counter() - t0)


def _copy_cuda(state: Mapping[str, Any], items: list[tuple[str, tuple[np.ndarray, str]]]) -> int:
    """One pinned staging buffer, one H2D copy, then device-side copies grouped by dtype."""
    import torch

    spans, offset = [], 0
    for name, (arr, _) in items:
        spans.append((name, offset, arr.nbytes))
        offset += -(-arr.nbytes // _ALIGN) * _ALIGN  # keep every view aligned for its dtype
    staging = _STAGER.buffer(offset)
    host = staging.numpy()
    for (_, start, n), (_, (arr, _)) in zip(spans, items):
        host[start : start + n] = arr.reshape(-1).view(np.uint8)
    device = state[items[0][0]].device
    if any(state[name].device != device for name, _ in items):
        raise TransferError("warm start into a module spread over several GPUs is not supported")
    on_device = staging.to(device, non_blocking=True)
    dst, src = [], []
    for name, start, n in spans:
        target = state[name]
        dst.append(target)
        src.append(on_device[start : start + n].view(target.dtype).view(target.shape))
    torch._foreach_copy_(dst, src)
    torch.cuda.current_stream(device).synchronize()
    return sum(n for _, _, n in spans)
