"""The Tier contract: a byte store with a byte capacity, plus an append-only log for the catalog."""
from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

log = logging.getLogger("tensorcache")

MAX_KEY_BYTES = 511  # LMDB's key limit, applied to every tier so keys move freely between them


def warn_once(seen: set[str], kind: str, message: str, *args: object) -> None:
    """Log ``message`` as a warning unless ``kind`` is already in ``seen`` (one warning per failure kind)."""
    if kind not in seen:
        seen.add(kind)
        log.warning(message, *args)


def check_key(key: bytes) -> bytes:
    """Return ``key`` if it is 1..511 bytes; raise TypeError/ValueError naming it otherwise."""
    if not isinstance(key, bytes):
        raise TypeError(f"tier keys are bytes, got {type(key).__name__} {key!r:.80}")
    if not 0 < len(key) <= MAX_KEY_BYTES:
        raise ValueError(f"tier key must be 1..{MAX_KEY_BYTES} bytes, got {len(key)}: {key!r:.80}")
    return key


def check_start(start: int) -> int:
    """Return a log index if it is a non-negative int; raise ValueError naming it otherwise."""
    if isinstance(start, bool) or not isinstance(start, int) or start < 0:
        raise ValueError(f"log start must be a non-negative int, got {start!r}")
    return start


def as_bytes_view(value: bytes | bytearray | memoryview) -> memoryview:
    """A flat unsigned-byte view of ``value`` without copying (it must be C-contiguous)."""
    return memoryview(value).cast("B")


class Tier(ABC):
    """A byte store. Re-putting a key that is present keeps the stored value (keys address content).

    Tiers never evict on their own and never raise on I/O: a failure is logged once per kind and
    reported as a miss (``get`` -> None) or a dropped put (``put`` -> False).
    """

    name: str
    capacity: int
    shared: bool

    def __init__(self, name: str, capacity: int, shared: bool) -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 0:
            raise ValueError(f"{name} tier capacity must be a non-negative int of bytes, got {capacity!r}")
        self.name, self.capacity, self.shared = name, capacity, shared
        self._warned: set[str] = set()

    def _warn(self, kind: str, message: str, *args: object) -> None:
        """Warn once per kind of failure of this tier."""
        warn_once(self._warned, kind, message, *args)

    @abstractmethod
    def get(self, key: bytes) -> memoryview | bytes | None:
        """The stored value, or None on a miss or any I/O failure."""

    @abstractmethod
    def put(self, key: bytes, value: bytes | bytearray | memoryview) -> bool:
        """Store ``value`` under ``key``; True if it is stored now (also if it already was)."""

    def get_many(self, keys: Sequence[bytes]) -> list[memoryview | bytes | None]:
        """``get`` of each key. Stores that can batch read them all in one transaction."""
        return [self.get(key) for key in keys]

    def put_many(self, items: Sequence[tuple[bytes, bytes | bytearray | memoryview]]) -> bool:
        """Store several values; True if all are stored. Stores that can batch do it in one transaction."""
        return all([self.put(key, value) for key, value in items])

    @abstractmethod
    def delete(self, key: bytes) -> None:
        """Remove ``key`` if present."""

    @abstractmethod
    def __contains__(self, key: bytes) -> bool:
        """Whether ``key`` is stored (False on I/O failure)."""

    @abstractmethod
    def used_bytes(self) -> int:
        """Value bytes currently stored (shared tiers count them in the store itself)."""

    @abstractmethod
    def append_log(self, record: bytes) -> None:
        """Append one record to the ordered, append-only log."""

    @abstractmethod
    def read_log(self, start: int) -> tuple[list[bytes], int]:
        """Records from index ``start`` on, and the index to read from next time."""

    @abstractmethod
    def close(self) -> None:
        """Release files and connections; the tier is unusable afterwards."""

    def __enter__(self) -> Tier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ProcessTier(Tier):
    """A process-local tier: values in a dict, their bytes counted, and a catalog log that is a list
    living and dying with the tier. Subclasses store values their own way and say their size."""

    def __init__(self, name: str, capacity: int) -> None:
        super().__init__(name, capacity, shared=False)
        self._values: dict[bytes, Any] = {}
        self._used = 0
        self._log: list[bytes] = []

    @abstractmethod
    def _nbytes(self, stored: Any) -> int:
        """Bytes one stored value counts against the capacity."""

    def delete(self, key: bytes) -> None:
        stored = self._values.pop(check_key(key), None)
        if stored is not None:
            self._used -= self._nbytes(stored)

    def __contains__(self, key: bytes) -> bool:
        return check_key(key) in self._values

    def used_bytes(self) -> int:
        return self._used

    def append_log(self, record: bytes) -> None:
        self._log.append(bytes(record))

    def read_log(self, start: int) -> tuple[list[bytes], int]:
        return self._log[check_start(start):], max(start, len(self._log))

    def close(self) -> None:
        self._values.clear()
        self._log.clear()
        self._used = 0

    def __len__(self) -> int:
        return len(self._values)
