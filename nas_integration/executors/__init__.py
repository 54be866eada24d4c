"""Executors: where evaluations run. The search loop submits candidates and waits for outcomes.

* ``SerialExecutor`` (``serial``): one evaluation at a time in this process (wall clock).
* ``SimulatedExecutor`` (``simulated``): K simulated workers on a discrete-event clock.
* ``ProcessExecutor`` (``process``): K spawned processes, each with its own cache.
* ``MPIExecutor`` (``mpi``): rank 0 schedules, ranks 1..K-1 run ``serve_mpi``.

Every executor that places children (simulated, process, MPI) does so through one ``Placement``
(``placement``), its clock injected, from what each worker last reported holding; remote workers run
``worker.serve``, receive the policy events they missed as one ``tensorcache.news.EvaluationNews`` with their next job and
send back, with each result, the models their own tiers hold (``TensorCache.local_models``). Every cache an
executor opens is a ``SearchCache`` (``guard``): a cache error is a miss or a skipped put, never a failed job.
"""
from .base import Executor, Outcome, merge_stats
from .guard import SearchCache
from .mpi import MPIExecutor, serve_mpi
from .placement import Locality, Placement
from .process import ProcessExecutor
from .serial import SerialExecutor
from .simulated import SimulatedExecutor

__all__ = ["Executor", "Locality", "MPIExecutor", "Outcome", "Placement", "ProcessExecutor", "SearchCache",
           "SerialExecutor", "SimulatedExecutor", "merge_stats", "serve_mpi"]
