"""Human byte sizes ("2GB", "512MiB", 1_000_000) to ints and back."""
from __future__ import annotations

import re

_UNITS = {
    "": 1, "b": 1,
    "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
    "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
    "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40,
}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def parse_size(size: int | float | str | None, *, what: str = "size") -> int:
    """Return a byte count for ``size``; raise ValueError naming the bad value otherwise."""
    if size is None:
        return 0
    if isinstance(size, bool):
        raise ValueError(f"bad {what}: {size!r} (expected bytes or a string like '2GB')")
    if isinstance(size, (int, float)):
        if size < 0:
            raise ValueError(f"bad {what}: {size!r} is negative")
        return int(size)
    m = _SIZE.match(str(size))
    if not m or m.group(2).lower() not in _UNITS:
        raise ValueError(f"bad {what}: {size!r} (expected e.g. 512MB, 2GiB, 1.5GB or a byte count)")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def format_size(n: float) -> str:
    """Short human form of a byte count, e.g. '1.5 GB'."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")
