"""What a search checks and prepares before it starts: devices, MPI ranks, reachable tiers, the output folder."""
from __future__ import annotations

import os
import shutil
from typing import Any

from tensorcache.config import CacheConfig

from .settings import SearchSettings

__all__ = ["check_disk", "check_redis", "gpu_ids", "inside", "mpi_local", "prepare_out"]


def gpu_ids() -> list[str]:
    """Visible CUDA device ids when there are several (one per worker process), else []."""
    import torch

    count = torch.cuda.device_count()
    if count < 2:
        return []
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    return (visible.split(",") if visible else [str(i) for i in range(count)])[:count]


def mpi_local() -> tuple[Any, int, int]:
    """COMM_WORLD, this rank's index on its node, and the number of ranks on the node (collective: call once)."""
    from mpi4py import MPI

    node = MPI.COMM_WORLD.Split_type(MPI.COMM_TYPE_SHARED)
    return MPI.COMM_WORLD, node.Get_rank(), node.Get_size()


def check_redis(config: CacheConfig) -> None:
    """Raise ConnectionError now, before any output or worker, when the required Redis tier is unreachable."""
    from tensorcache.tiers.redis import check_reachable

    check_reachable(config.redis)


def inside(path: str, folder: str) -> bool:
    """Whether ``path`` lies below ``folder`` (the output folder is made later, so its tiers need no check)."""
    return os.path.abspath(path).startswith(os.path.abspath(folder) + os.sep)


def check_disk(config: CacheConfig) -> None:
    """Raise OSError now, naming the path, when the LMDB tier's folder cannot be made (a mistyped --disk)."""
    try:
        os.makedirs(config.disk_path, exist_ok=True)
    except OSError as exc:
        raise OSError(f"cannot open LMDB tier at {config.disk_path!r}: {exc.strerror or exc}") from None


def prepare_out(s: SearchSettings) -> tuple[str, str]:
    os.makedirs(s.out, exist_ok=True)
    trace_path, summary_path = os.path.join(s.out, "trace.jsonl"), os.path.join(s.out, "summary.json")
    if s.resume:
        return trace_path, summary_path
    if os.path.exists(trace_path):
        if not s.overwrite:
            raise FileExistsError(f"{trace_path} already exists; choose another --out, pass --resume to continue "
                                  "that search or --overwrite to replace it")
        for path in (trace_path, summary_path):
            if os.path.exists(path):
                os.remove(path)
        disk = s.cache_config.disk_path
        if disk == os.path.join(s.out, "cache.lmdb") and os.path.isdir(disk):
            shutil.rmtree(disk)
    return trace_path, summary_path
