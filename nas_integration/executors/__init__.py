"""Executors: where evaluations run. The search loop submits candidates and waits for outcomes.

* ``SerialExecutor`` (``serial``): one evaluation at a time in this process (wall clock).
* ``SimulatedExecutor`` (``simulated``): K simulated workers on a discrete-event clock.
* ``ProcessExecutor`` (``process``): K spawned processes, each with its own cache.
* ``MPIExecutor`` (``mpi``): rank 0 schedules, ranks 1..K-1 run ``mpi_worker``.

Every executor that places children (simulated, process, MPI) does so through one ``Placement``
(``placement``), its clock injected, from what each worker last reported holding; remote workers run
``worker.run_jobs``, receive the policy events they missed as one ``tensorcache.news.EvaluationNews`` with their next job and
send back, with each result, the models their own tiers hold (``TensorCache.local_models``). Every cache an
executor opens is a ``SearchCache`` (``guard``): a cache error is a miss or a skipped put, never a failed job.
"""
from .base import Executor, Outcome, merge_stats
from .guard import SearchCache
from .mpi import MPIExecutor, mpi_worker
from .placement import Locality, Placement
from .process import ProcessExecutor
from .serial import SerialExecutor
from .simulated import SimulatedExecutor

__all__ = ["Executor", "Locality", "MPIExecutor", "Outcome", "Placement", "ProcessExecutor", "SearchCache",
           "SerialExecutor", "SimulatedExecutor", "merge_stats", "mpi_worker"]


def __getattr__(name: str) -> object:
    """``serve_mpi``, the old name of ``mpi_worker``, with a DeprecationWarning."""
    if name == "serve_mpi":
        import warnings

        warnings.warn("nas_integration.executors.serve_mpi is now mpi_worker", DeprecationWarning, stacklevel=2)
        return mpi_worker
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
