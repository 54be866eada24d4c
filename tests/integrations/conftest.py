"""Optional frameworks: a test needing one skips with a reason when it is missing, and fails under CI."""
from __future__ import annotations

import importlib
import os
from types import ModuleType

import pytest


def need(module: str) -> ModuleType:
    """Import ``module``; skip (fail in CI, which installs the extra) when it is not installed."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        message = f"{module} is not installed (pip install 'tensorcache[integrations]'): {exc}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="session")
def dh_app() -> ModuleType:
    """``dh_app.py`` beside this file, imported as ``dh_app`` so that worker processes can unpickle from it."""
    need("deephyper")
    import importlib.util
    import sys
    from pathlib import Path

    if "dh_app" not in sys.modules:
        spec = importlib.util.spec_from_file_location("dh_app", Path(__file__).with_name("dh_app.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules["dh_app"] = module
        spec.loader.exec_module(module)
    return sys.modules["dh_app"]


@pytest.fixture(scope="session")
def optuna() -> ModuleType:
    """The optuna package (skips, or fails in CI, when missing)."""
    return need("optuna")


@pytest.fixture(scope="session")
def ray() -> ModuleType:
    """The ray package (skips, or fails in CI, when missing)."""
    return need("ray")
