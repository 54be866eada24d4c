"""Optional frameworks: a test module needing one skips with a reason when it is missing, and fails in CI."""
from __future__ import annotations

import importlib
import os
from types import ModuleType

import pytest


def need(module: str, in_ci: bool = True) -> ModuleType:
    """Import ``module``; without it skip the caller, or fail under CI when CI must have it (``in_ci``)."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        message = f"{module} is not installed (pip install 'tensorcache[integrations]'): {exc}"
        if in_ci and os.environ.get("CI"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message, allow_module_level=True)
