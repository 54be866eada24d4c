"""SearchSettings: every knob of a search, its per-evaluator defaults, and the checks made before it starts.

The workers' caches are one ``tensorcache.CacheConfig`` embedded as is (``cache_config``); resolving the
settings fills in only what the search knows and the library cannot (see the field's comment).
"""
from __future__ import annotations

import math
import os
import uuid
from dataclasses import dataclass, field, fields, replace
from typing import Any

from tensorcache.config import CacheConfig
from tensorcache.sizes import parse_size

from .data import DATASETS, nb201_table
from .evaluators import Evaluator, make_evaluator
from .evaluators.tabular import DATASETS as TABLE_DATASETS
from .spaces import get_space

# per-evaluator defaults for settings left as None
DEFAULTS: dict[str, dict[str, Any]] = {
    "tabular": {"space": "nb201", "dataset": "cifar10", "evals": 1000, "population": 100, "sample": 25,
                "epochs": 200},
    "train": {"space": "attn", "dataset": "mnist-small", "evals": 24, "population": 8, "sample": 3, "epochs": 1,
              "train_subset": 5000},
}


def evaluator_datasets(evaluator: str) -> tuple[str, ...]:
    """The dataset names an evaluator takes, as ``--help`` and the errors spell them."""
    return tuple(TABLE_DATASETS) if evaluator == "tabular" else DATASETS


@dataclass
class SearchSettings:
    """Every knob of a search; ``None`` means the evaluator's default (see ``DEFAULTS`` and ``resolved``)."""

    out: str
    evaluator: str = "train"
    space: str | None = None
    dataset: str | None = None
    data_dir: str | None = None
    table: str | None = None
    evals: int | None = None
    population: int | None = None
    sample: int | None = None
    mode: str = "async"
    mutation_bias: float = 0.0
    seed: int = 0
    workers: int = 1
    executor: str = "serial"
    job_timeout: float | None = None
    retries: int = 1
    cache: bool = True
    # the workers' caches; the search fills in: disk None -> out/cache.lmdb ("none": no disk tier), namespace
    # "default" -> <space>-<evaluator>-<dataset>, a policy's undeclared window -> 4 x population (the window
    # sweep in docs/policies.md), the device tier's device -> the training device
    cache_config: CacheConfig = field(default_factory=CacheConfig)
    transfer: str | None = None  # None: the space's own default (compatible for nb201, prefix otherwise)
    payload_scale: float = 1 / 64
    time_scale: float = 0.0
    revisit: str = "train"  # a child repeating an evaluated arch: "train" it again or "reuse" the earlier score
    inflight: bool | None = None  # describe each child to the caches when issued (evolution-aware counts it as a
    # parent); None: on where the cache is in this process (serial executor); workers hear it with their next job
    locality_wait: float | None = None  # tabular: reserve a busy worker holding the donor if free within this
    worker_memory: str | None = None  # tabular: each worker's memory as placement models it (default: its memory)
    reeval_leaders: int = 0  # every N finished evaluations retrain the population's leader from scratch (0: never)
    control: float = 0.0  # fraction of warm-started children also trained from scratch, twice (fidelity check)
    epochs: int | None = None
    batch_size: int = 128
    lr: float = 1e-3
    amp: bool = False
    train_subset: int | None = None  # 0 = the whole training set
    device: str = "auto"
    threads: int | None = None  # torch threads per training worker; None: OMP_NUM_THREADS, else the free cores
    # split among the node's workers (nas_integration.threads)
    run_id: str | None = None
    overwrite: bool = False
    resume: bool = False  # continue the search whose trace is in ``out`` (nas_integration.resume)

    def resolved(self) -> SearchSettings:
        """A copy with every None default filled in and the values checked (resolving twice changes nothing)."""
        if self.evaluator not in DEFAULTS:
            raise ValueError(f"unknown evaluator {self.evaluator!r}; expected one of {sorted(DEFAULTS)}")
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        for key, default in DEFAULTS[self.evaluator].items():
            if values[key] is None:
                values[key] = default
        if values["transfer"] is None:
            values["transfer"] = get_space(values["space"]).transfer
        if values["inflight"] is None:
            values["inflight"] = values["executor"] == "serial"
        if self.evaluator == "tabular" and values["table"] is None:
            values["table"] = os.fspath(nb201_table())
        if values["run_id"] is None and self.resume:  # the interrupted search's, so its model ids match
            from .resume import previous_run_id

            values["run_id"] = previous_run_id(self.out)
        if values["run_id"] is None:
            values["run_id"] = uuid.uuid4().hex[:8]
        values["cache_config"] = self._resolved_cache(values)
        s = SearchSettings(**values)
        names = evaluator_datasets(s.evaluator)
        checks = [(s.dataset in names, f"{s.evaluator} evaluator: unknown dataset {s.dataset!r}; expected one of "
                                       f"{', '.join(names)}"),
                  (s.cache_config.redis is not None or not s.cache_config.redis_required,
                   "--redis-required needs --redis URL"),
                  (s.mode in ("async", "batch"), f"mode must be 'async' or 'batch', got {s.mode!r}"),
                  (s.executor in ("serial", "process", "mpi"),
                   f"executor must be serial, process or mpi, got {s.executor!r}"),
                  (s.transfer in ("prefix", "compatible"), f"transfer must be prefix or compatible, got {s.transfer!r}"),
                  (s.revisit in ("train", "reuse"), f"revisit must be train or reuse, got {s.revisit!r}"),
                  (s.evals >= 1, f"evals must be >= 1, got {s.evals}"),
                  (s.seed >= 0, f"seed must be >= 0, got {s.seed}"),
                  (not (s.resume and s.overwrite), "--resume continues the search in --out; --overwrite replaces "
                                                   "it: choose one"),
                  (not s.resume or s.executor != "mpi", "--resume works with the serial and process executors; "
                                                        "under MPI, start a new search"),
                  (s.workers >= 1, f"workers must be >= 1, got {s.workers}"),
                  (s.retries >= 0, f"retries must be >= 0, got {s.retries}"),
                  (0 <= s.control <= 1, f"control must be a fraction in 0..1, got {s.control}"),
                  (s.reeval_leaders >= 0, f"reeval leaders must be >= 0 (0: never), got {s.reeval_leaders}"),
                  (s.population >= 1, f"population must be >= 1, got {s.population}"),
                  (1 <= s.sample <= s.population, f"sample must be in 1..population ({s.population}), got {s.sample}"),
                  (s.locality_wait is None or s.evaluator == "tabular",
                   "--locality-wait needs the tabular evaluator (it reports which tier served each transfer)"),
                  (s.locality_wait is None or s.executor == "serial" or not s.cache
                   or s.cache_config.disk_path is not None or s.cache_config.redis is not None,
                   "--locality-wait with process or mpi workers needs a shared tier (--disk or --redis): the "
                   "scheduler sees the workers' models through it"),
                  (s.evaluator == "tabular" or s.executor != "serial" or s.workers == 1,
                   (f"--workers {s.workers} needs --executor process or mpi: the serial executor trains one model "
                    "at a time (only the tabular evaluator simulates several workers in one process)"))]
        for name, value in (("mutation bias", s.mutation_bias), ("learning rate", s.lr), ("time scale", s.time_scale),
                            ("locality wait", s.locality_wait), ("job timeout", s.job_timeout)):
            if value is not None and not math.isfinite(value):  # nan passes every range check below
                raise ValueError(f"{name} must be a finite number, got {value}")
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        if s.worker_memory is not None:  # named here, before the scheduler parses it (the cache config checks its own)
            parse_size(s.worker_memory, what="worker memory")
        return s

    def _resolved_cache(self, values: dict[str, Any]) -> CacheConfig:
        """The cache config with the search's defaults filled in (see the ``cache_config`` field)."""
        config = values["cache_config"]
        if not isinstance(config, CacheConfig):
            raise ValueError(f"cache_config must be a CacheConfig, got {config!r}")
        changes: dict[str, Any] = {"device": values["device"]}  # "auto" is resolved by the cache as by training
        if config.disk is None:
            changes["disk"] = os.path.join(self.out, "cache.lmdb")
        if config.namespace == CacheConfig.namespace:
            changes["namespace"] = f"{get_space(values['space']).name}-{self.evaluator}-{values['dataset']}"
        if config.takes("window") and "window" not in config.policy_options and values["population"] >= 1:
            config = config.with_options(window=4 * values["population"])  # a bad population is named below
        return replace(config, **changes)

    def worker_cache_config(self, scale: float) -> CacheConfig | None:
        """What each worker's cache is built from (capacities times ``scale``), or None without a cache."""
        return self.cache_config.scaled(scale) if self.cache else None

    def make_evaluator(self, threads: int | None = None) -> Evaluator:
        common = {"space": self.space, "dataset": self.dataset, "epochs": self.epochs, "transfer": self.transfer,
                  "namespace": self.cache_config.namespace, "seed": self.seed}
        if self.evaluator == "tabular":
            return make_evaluator("tabular", table=self.table, payload_scale=self.payload_scale,
                                  time_scale=self.time_scale, **common)
        return make_evaluator("train", data_dir=self.data_dir, batch_size=self.batch_size, lr=self.lr, amp=self.amp,
                              train_subset=self.train_subset or None, device=self.device, threads=threads, **common)

