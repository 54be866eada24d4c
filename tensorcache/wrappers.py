"""State-dict names under torch's module wrappers, which the cache stores and matches as the plain names.

``nn.DataParallel`` and ``DistributedDataParallel`` put ``module.`` before every entry of a state dict,
``torch.compile`` puts ``_orig_mod.``, and they nest (``_orig_mod.module.``). A wrapped model is put, looked
up and warm-started like the plain one: the wrapper segments that every name shares are removed.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

WRAPPERS: tuple[str, ...] = ("module.", "_orig_mod.")
T = TypeVar("T")


def wrapper_prefix(names: Iterable[str]) -> str:
    """The wrapper segments every name starts with (e.g. ``"_orig_mod.module."``), or "" when they share none."""
    names = list(names)
    prefix = ""
    while names:
        for segment in WRAPPERS:
            longer = prefix + segment
            if all(n.startswith(longer) and len(n) > len(longer) for n in names):
                prefix = longer
                break
        else:
            return prefix
    return prefix


def unwrapped(state: Mapping[str, T]) -> Mapping[str, T]:
    """``state`` with the wrapper prefix all its names share removed (``state`` itself when they share none)."""
    cut = len(wrapper_prefix(state))
    return {name[cut:]: value for name, value in state.items()} if cut else state


def with_plain_names(found: dict[str, Any]) -> dict[str, Any]:
    """``found`` (a module's tensors by state-dict name) plus each one under its unwrapped name, so names
    stored from a wrapped model and from the plain one both match (a name already there keeps its tensor)."""
    cut = len(wrapper_prefix(found))
    if cut:
        for name, value in list(found.items()):
            found.setdefault(name[cut:], value)
    return found
