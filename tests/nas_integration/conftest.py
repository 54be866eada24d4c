"""The environment for ``mpirun`` in the driver's tests: root allowed, oversubscribed, this checkout imported."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def mpi_env() -> dict[str, str]:
    """``os.environ`` for ranks started by ``mpirun``, with this checkout first on ``PYTHONPATH``."""
    return {**os.environ, "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
            "OMPI_MCA_rmaps_base_oversubscribe": "1",
            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
