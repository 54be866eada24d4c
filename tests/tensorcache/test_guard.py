"""The library's guard: a cache call that raises is the default, counted by operation, warned about once per
operation and exception type; quiet exception types are counted only."""
from __future__ import annotations

import warnings

import pytest

from tensorcache.guard import Guard


def _fails(exc: Exception):
    def call():
        raise exc
    return call


def test_a_failure_is_the_default_counted_and_warned_once_per_kind():
    guard, noted = Guard(), []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for n in range(3):
            assert guard("put", None, _fails(ValueError(f"id m{n} taken")), f"model m{n}", noted.append) is None
        assert guard("lookup", "miss", _fails(ValueError("bad"))) == "miss"
        assert guard("lookup", "miss", _fails(KeyError("gone"))) == "miss"
        assert guard("lookup", "miss", lambda: "hit") == "hit"
    messages = [str(w.message) for w in caught]
    assert all(w.category is RuntimeWarning for w in caught) and len(messages) == 3
    assert "put of model m0 failed: ValueError: id m0 taken; the put is skipped" in messages[0]
    assert "lookup failed: ValueError: bad; a miss" in messages[1] and "KeyError" in messages[2]
    assert guard.errors == {"put": 3, "lookup": 2}
    assert noted == [f"put of model m{n} failed: ValueError: id m{n} taken" for n in range(3)]


def test_quiet_failures_are_counted_not_warned():
    guard = Guard(quiet=(LookupError,))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning would raise here
        assert guard("warm start", 0, _fails(KeyError("no cache"))) == 0
    assert guard.errors == {"warm start": 1}
    with pytest.raises(KeyboardInterrupt):  # only exceptions are answered, not interrupts
        guard("put", None, _fails(KeyboardInterrupt()))
