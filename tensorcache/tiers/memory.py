"""Process-local RAM tier: at most one copy in on put (none for immutable bytes), zero copies out on get."""
from __future__ import annotations

from typing import Any

import numpy as np

from .base import ProcessTier, StoreFailure, as_bytes_view


class MemoryTier(ProcessTier):
    """A dict of owned byte buffers; ``get`` and ``read`` return a read-only memoryview of the stored buffer.
    A buffer is kept as ``bytes`` or a read-only numpy array, neither of which the cyclic collector tracks
    (a memoryview kept per payload would be two objects it walks for as long as the payload is held).

    With ``pinned=True`` each value lives in page-locked memory (a torch uint8 tensor) so copies to
    the GPU can be asynchronous; without torch or CUDA the tier warns once and uses plain buffers.
    """

    def __init__(self, capacity: int, pinned: bool = False) -> None:
        super().__init__("memory", capacity)
        self._torch = _pinning_torch() if pinned else None
        if pinned and self._torch is None:
            self._warn("pinned", "pinned memory needs torch with CUDA; the memory tier uses ordinary RAM")
        self.pinned = self._torch is not None

    def _store(self, value: bytes | bytearray | memoryview) -> bytes | np.ndarray:
        if self._torch is None and type(value) is bytes:
            return value  # immutable bytes no one can change: kept as they are, no copy
        src = as_bytes_view(value)
        if self._torch is None and isinstance(src.obj, bytes) and src.nbytes == len(src.obj):
            return src.obj  # a whole view of immutable bytes: they are kept as they are
        try:
            buf = self._alloc(len(src))
        except (MemoryError, RuntimeError) as exc:  # RuntimeError: torch failing to pin
            self._warn("alloc", "memory tier could not allocate %d bytes (%s); value dropped", len(src), exc)
            raise StoreFailure(f"cannot allocate {len(src)} bytes") from None
        buf[:] = src
        buf.flags.writeable = False  # what the tier keeps is never written through a served view
        return buf

    def _load(self, stored: bytes | np.ndarray) -> memoryview:
        return memoryview(stored)  # read-only: bytes, or an array made read-only above

    def _alloc(self, n: int) -> Any:
        """A writable uint8 buffer of ``n`` bytes, page-locked when pinning."""
        if self._torch is not None:
            return self._torch.empty(n, dtype=self._torch.uint8, pin_memory=True).numpy()
        return np.empty(n, dtype=np.uint8)

    def _nbytes(self, stored: bytes | np.ndarray) -> int:
        return len(stored)  # an array kept here is one-dimensional uint8

    def __repr__(self) -> str:
        return f"MemoryTier(capacity={self.capacity}, pinned={self.pinned}, used={self.used_bytes()}, n={len(self)})"


def _pinning_torch() -> Any:
    """The torch module if it can pin host memory here (CUDA available), else None."""
    try:
        import torch
    except ImportError:
        return None
    return torch if torch.cuda.is_available() else None
