"""Columns of numbers over a changing set of keys, so that a pass over every key is a few numpy operations."""
from __future__ import annotations

import operator
from array import array
from collections.abc import Hashable
from typing import Any

import numpy as np


class Columns:
    """One row of named columns per present key: a key takes a free row when added and gives it back when
    dropped (rows are reused; their order means nothing). Columns are ``array.array``s, cheap to write one
    value at a time, read as numpy arrays (``column``) by passes over every row."""

    def __init__(self, **types: str) -> None:
        """``types``: column name -> its ``array`` type code ("q": int64, "d": float64)."""
        self.row: dict[Hashable, int] = {}  # present key -> its row
        self._keys: list[Hashable | None] = []  # row -> its key (None: free)
        self._free: list[int] = []
        self._alive = array("b")
        self._columns = {name: array(code) for name, code in types.items()}
        self._arrays = tuple(self._columns.values())  # in the order of ``add``'s values

    def add(self, key: Hashable, *values: Any) -> int:
        """Give ``key`` a row holding ``values``, one per column in the order the columns were named."""
        if self._free:
            row = self._free.pop()
            self._keys[row] = key
            self._alive[row] = 1
            for column, value in zip(self._arrays, values):
                column[row] = value
        else:
            row = len(self._keys)
            self._keys.append(key)
            self._alive.append(1)
            for column, value in zip(self._arrays, values):
                column.append(value)
        self.row[key] = row
        return row

    def set(self, name: str, row: int, value: Any) -> None:
        self._columns[name][row] = value

    def array(self, name: str) -> array:
        """Column ``name`` itself, to read or write one row at a time (``column[row]``)."""
        return self._columns[name]

    def put(self, name: str, rows: np.ndarray, values: np.ndarray) -> None:
        """Write ``values`` into column ``name`` at ``rows`` (one numpy pass)."""
        data = self._columns[name]
        np.frombuffer(data, data.typecode)[rows] = values

    def get(self, name: str, row: int) -> Any:
        return self._columns[name][row]

    def drop(self, key: Hashable) -> None:
        row = self.row.pop(key)
        self._keys[row] = None
        self._alive[row] = 0
        self._free.append(row)

    def rows(self) -> np.ndarray:
        """The rows of the present keys."""
        return np.flatnonzero(np.frombuffer(self._alive, np.int8))

    def column(self, name: str, rows: np.ndarray | None = None) -> np.ndarray:
        """A copy of column ``name`` (only ``rows``, if given): the copy leaves the column free to grow."""
        data = self._columns[name]
        view = np.frombuffer(data, data.typecode)
        return view.copy() if rows is None else view[rows]

    def key(self, row: int) -> Any:
        """The key of ``row``."""
        return self._keys[row]

    def keys(self, rows: np.ndarray) -> list[Any]:
        """The keys of ``rows``."""
        if len(rows) < 2:
            return [self._keys[row] for row in rows.tolist()]
        return list(operator.itemgetter(*rows.tolist())(self._keys))

    @property
    def size(self) -> int:
        """Rows in use or free: every row is below it."""
        return len(self._keys)

    def __len__(self) -> int:
        return len(self.row)
