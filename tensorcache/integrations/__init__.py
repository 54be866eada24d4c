"""Drop-in warm starts for searches run by other frameworks (DeepHyper, Optuna): optional extras.

Importing ``tensorcache`` never imports these frameworks; ``tensorcache.integrations.deephyper`` and
``tensorcache.integrations.optuna`` need ``pip install 'tensorcache[integrations]'``.
"""
from __future__ import annotations

from importlib import import_module
from types import ModuleType

EXTRA = "integrations"


def require(module: str, feature: str) -> ModuleType:
    """Import ``module`` or raise an ImportError naming the extra that installs it."""
    try:
        return import_module(module)
    except ImportError as exc:
        raise ImportError(f"{feature} needs the {module!r} package: pip install 'tensorcache[{EXTRA}]' "
                          f"(or pip install {module})") from exc
