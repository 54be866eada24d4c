"""Search spaces: the ``SearchSpace`` contract, the nb201 and attn spaces, and the name registry.

The built-in spaces' modules (torch models) are imported when a space is first built or named here, so that
listing the names (``known_spaces``, ``run_search --help``) does not import torch.
"""
from importlib import import_module
from typing import Any

from .base import (SearchSpace, SequenceSpace, get_space, known_spaces, register_space, state_nbytes,
                   unregister_space)

_BUILT_IN = {"AttnSpace": "attn", "NB201Space": "nb201", "NB201Index": "nb201"}


def __getattr__(name: str) -> Any:
    """The built-in spaces' classes, imported on first use."""
    if name not in _BUILT_IN:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f".{_BUILT_IN[name]}", __name__), name)


def _built_in(name: str) -> Any:
    """A factory for the built-in space class ``name`` that imports its module when called."""
    return lambda **kw: __getattr__(name)(**kw)


register_space("nb201", _built_in("NB201Space"))
register_space("attn", _built_in("AttnSpace"))

__all__ = ["AttnSpace", "NB201Index", "NB201Space", "SearchSpace", "SequenceSpace", "get_space",
           "known_spaces", "register_space", "state_nbytes", "unregister_space"]
