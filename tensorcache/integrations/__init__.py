"""Drop-in warm starts for searches run by other frameworks (DeepHyper, Optuna, Ray Tune): optional extras.

Importing ``tensorcache`` never imports these frameworks; ``tensorcache.integrations.deephyper`` and
``tensorcache.integrations.optuna`` need ``pip install 'tensorcache[integrations]'``,
``tensorcache.integrations.ray_tune`` needs ``pip install 'tensorcache[ray]'``.
"""
from __future__ import annotations

from importlib import import_module
from types import ModuleType

EXTRA = "integrations"


def require(module: str, feature: str, extra: str = EXTRA) -> ModuleType:
    """Import ``module`` or raise an ImportError naming the extra that installs it."""
    try:
        return import_module(module)
    except ImportError as exc:
        raise ImportError(f"{feature} needs the {module!r} package: pip install 'tensorcache[{extra}]' "
                          f"(or pip install {module})") from exc
