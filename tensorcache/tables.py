"""Score tables (CSV, plain or gzipped, such as NAS-Bench-201's): opened the one way the driver's tabular
evaluator and ``tensorcache analyze`` read them."""
from __future__ import annotations

import csv
import gzip
import io
import os


def open_text(path: str | os.PathLike) -> io.TextIOBase:
    """A text file for csv, transparently gunzipped when its name ends in .gz."""
    if str(path).endswith(".gz"):
        return gzip.open(path, "rt", newline="")
    return open(path, newline="")


def column(path: str | os.PathLike, name: str) -> list[float]:
    """The numbers of one column of a CSV table, its empty cells left out."""
    with open_text(path) as f:
        return [float(row[name]) for row in csv.DictReader(f) if row.get(name) not in (None, "")]
