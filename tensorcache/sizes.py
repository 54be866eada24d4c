"""Human byte sizes ("2GB", "512MiB", 1_000_000) to ints and back."""
from __future__ import annotations

import math
import re
from typing import Any

_UNITS = {
    "": 1, "b": 1,
    "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
    "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
    "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40,
}
_SIZE = re.compile(r"^\s*(\d{1,30})(?:\.(\d{1,30}))?\s*([a-zA-Z]*)\s*$")
MAX_SIZE = 2**63 - 1  # the most bytes a size may name (a 5000-digit "size" is a typo, not a disk)


def parse_size(size: int | float | str | None, *, what: str = "size") -> int:
    """Return a byte count in 0..2^63-1 for ``size``; raise ValueError naming ``what`` and the bad value otherwise
    (negative, inf, NaN, too many digits, an unknown unit)."""
    if size is None:
        return 0
    if isinstance(size, bool):
        raise ValueError(f"bad {what}: {size!r} (expected bytes or a string like '2GB')")
    if isinstance(size, (int, float)):
        if isinstance(size, float) and not math.isfinite(size):
            raise ValueError(f"bad {what}: {size!r} is not a finite number of bytes")
        if size < 0:
            raise ValueError(f"bad {what}: {size!r} is negative")
        return _bounded(int(size), size, what)
    m = _SIZE.match(str(size))
    if not m or m.group(3).lower() not in _UNITS:
        raise ValueError(f"bad {what}: {str(size)!r:.80} (expected e.g. 512MB, 2GiB, 1.5GB or a byte count)")
    whole, frac, unit = m.group(1), m.group(2) or "", _UNITS[m.group(3).lower()]
    return _bounded((int(whole + frac) * unit) // 10 ** len(frac), size, what)  # exact: no float rounding


def _bounded(n: int, size: Any, what: str) -> int:
    if n > MAX_SIZE:
        raise ValueError(f"bad {what}: {str(size)!r:.80} is more than 2^63 - 1 bytes")
    return n


def shared_capacity(size: int | float | str | None, store: Any, *, what: str) -> int:
    """``parse_size`` of a shared tier's capacity; ValueError if the tier is asked for (``store`` given) with 0
    bytes, which could hold nothing."""
    n = parse_size(size, what=what)
    if store is not None and n == 0:
        raise ValueError(f"bad {what}: {size!r} is 0 bytes for a tier that is asked for; give a capacity > 0, "
                         "or no tier")
    return n


def format_size(n: float) -> str:
    """Short human form of a byte count, e.g. '1.5 GB'."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")
