"""Storage tiers under the cache: device memory, process memory, a node-local LMDB file, a shared Redis server."""
from .base import Tier
from .device import DeviceTier
from .lmdb import LMDBTier
from .memory import MemoryTier
from .redis import RedisTier

__all__ = ["Tier", "DeviceTier", "MemoryTier", "LMDBTier", "RedisTier"]
