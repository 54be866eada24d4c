"""Device-memory tier (a GPU's memory, or "cpu"): warm starts copy device to device, no host round trip.

A payload's raw bytes live in their own uint8 tensor on the device (allocations are aligned, so typed
views need no copy) and its header stays on the host, parsed once on put; ``view`` returns the typed,
shaped tensor the header describes. Values that are not payloads are stored whole. Process-local, like
the memory tier: meant for single-node searches whose workers own one GPU each.
"""
from __future__ import annotations

import warnings
from typing import Any, NamedTuple

from ..payload import PayloadError, read_header
from .base import ProcessTier, StoreFailure, as_bytes_view, check_key


class _Stored(NamedTuple):
    head: bytes  # the payload header (empty for a value that is not a payload)
    body: Any  # uint8 torch tensor on the device
    dtype: str | None  # None for a value that is not a payload
    shape: tuple[int, ...]


class DeviceTier(ProcessTier):
    """A dict of torch tensors on ``device``; ``get`` copies a value to the host, ``view`` does not."""

    device_views = True

    def __init__(self, capacity: int, device: str = "cuda") -> None:
        import torch

        super().__init__("device", capacity)
        try:
            self.device = torch.device(device)
            if self.device.type == "cuda" and not torch.cuda.is_available():
                raise RuntimeError("CUDA is not available")
            torch.empty(0, device=self.device)
        except (RuntimeError, AssertionError) as exc:  # AssertionError: torch built without CUDA
            raise ValueError(f"device tier: cannot use device {device!r}: {exc}") from None
        self._torch = torch

    def _load(self, stored: _Stored) -> bytes:
        """The stored value, copied to the host (for demotion and verified reads; warm starts use ``view``)."""
        return stored.head + stored.body.cpu().numpy().tobytes()

    def view(self, key: bytes) -> tuple[Any, str] | None:
        """The stored payload as a (typed, shaped tensor on the device, dtype name), or None on a miss.

        The tensor is the tier's own memory: read it, never write it. PayloadError for a stored value
        that is not a payload."""
        stored = self._values.get(check_key(key))
        if stored is None:
            return None
        if stored.dtype is None:
            raise PayloadError("the stored value is not a tensorcache payload")
        body = stored.body if stored.dtype == "uint8" else stored.body.view(getattr(self._torch, stored.dtype))
        return body.view(stored.shape), stored.dtype

    def _store(self, value: bytes | bytearray | memoryview) -> _Stored:
        src = as_bytes_view(value)
        try:
            dtype, shape, offset = read_header(src)
        except PayloadError:
            dtype, shape, offset = None, (), 0
        torch = self._torch
        try:
            body = torch.empty(len(src) - offset, dtype=torch.uint8, device=self.device)
            if len(body):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", UserWarning)  # a read-only source is only read
                    body.copy_(torch.frombuffer(src, dtype=torch.uint8, offset=offset))
        except RuntimeError as exc:  # out of device memory (torch.OutOfMemoryError is a RuntimeError)
            self._warn("alloc", "device tier could not store %d bytes on %s (%s); value dropped",
                       len(src), self.device, exc)
            raise StoreFailure(f"cannot store {len(src)} bytes on {self.device}") from None
        return _Stored(bytes(src[:offset]), body, dtype, shape)

    def _nbytes(self, stored: _Stored) -> int:
        return len(stored.head) + len(stored.body)

    def __repr__(self) -> str:
        return f"DeviceTier(capacity={self.capacity}, device={str(self.device)!r}, used={self.used_bytes()}, n={len(self)})"
