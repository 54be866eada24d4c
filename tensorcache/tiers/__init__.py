"""Storage tiers under the cache: process memory, a node-local LMDB file, a shared Redis server."""
from .base import Tier
from .lmdb import LMDBTier
from .memory import MemoryTier
from .redis import RedisTier

__all__ = ["Tier", "MemoryTier", "LMDBTier", "RedisTier"]
