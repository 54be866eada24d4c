"""tensorcache: cache trained layer tensors so NAS workers warm-start new candidates from earlier models."""
from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "TensorCache": "cache", "Hit": "cache", "LayerMap": "layers", "LayerSpec": "layers", "Policy": "policies",
    "layer_map_of": "module_map", "make_policy": "policies", "register_policy": "policies", "parse_size": "sizes", "PayloadError": "payload",
    "TransferError": "transfer", "TransferReport": "transfer", "CacheConfig": "config", "TraceRecord": "trace",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    """Import submodules on first use, so `import tensorcache` stays cheap (torch only when needed)."""
    if name not in _EXPORTS:
        raise AttributeError(f"module 'tensorcache' has no attribute {name!r}")
    return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
