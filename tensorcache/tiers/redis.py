"""Shared tier on a Redis server, seen by every node of a search.

Keys live under ``tc:{namespace}:`` so searches sharing a server never collide: ``v:<key>`` holds a
whole value, or for a value over ``chunk_size`` ``m:<key>`` holds a manifest and ``c:<key>:c<i>`` the
chunks; ``used`` counts stored value bytes and ``log`` is the catalog log (a list), whose generation
``epoch`` names so that a reader notices a server that restarted empty. Each put or delete is one
WATCH/MULTI transaction, so the counter moves only when a value really was stored or removed.
An unreachable server is warned about once per outage, then skipped for a back-off period (0.5 s
doubling to 30 s).
"""
from __future__ import annotations

import os
import struct
import time
from collections.abc import Callable
from typing import TypeVar
from urllib.parse import urlsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from .base import Tier, as_bytes_view, check_key, check_start, log

T = TypeVar("T")

_MANIFEST = struct.Struct(">QQ")  # total bytes, chunk size
_MAX_CHUNK = 512 * 2**20  # Redis's largest string
_MAX_CHUNKS = 2**24
_FIRST_BACKOFF, _MAX_BACKOFF = 0.5, 30.0
_WATCH_TRIES = 8
_UNREACHABLE = (redis.ConnectionError, redis.TimeoutError, OSError)


def redact(url: str) -> str:
    """``url`` with any password (in the authority or the query) replaced by ``***``."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        netloc = f"{parts.username or ''}:***@{netloc.rpartition('@')[2]}"
    query = "&".join("password=***" if p.lower().startswith("password=") else p
                     for p in parts.query.split("&")) if parts.query else ""
    return parts._replace(netloc=netloc, query=query).geturl()


class RedisTier(Tier):
    """A byte store on the Redis server at ``url`` (``redis://``, ``rediss://`` or ``unix://``).

    With ``required=True`` an unreachable server at construction raises ConnectionError; otherwise the
    tier warns and reports misses until the server answers.
    """

    def __init__(self, url: str, capacity: int, namespace: str, chunk_size: int = 256 * 2**20,
                 required: bool = False, socket_timeout: float = 2.0) -> None:
        super().__init__("redis", capacity, shared=True)
        if not isinstance(namespace, str) or not namespace or ":" in namespace:
            raise ValueError(f"redis namespace must be a non-empty string without ':', got {namespace!r}")
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or not 0 < chunk_size <= _MAX_CHUNK:
            raise ValueError(f"chunk_size must be an int in 1..{_MAX_CHUNK}, got {chunk_size!r}")
        self.url, self.namespace, self.chunk_size = redact(url), namespace, chunk_size
        parts = urlsplit(url)
        self.address = parts.path if parts.scheme == "unix" else f"{parts.hostname}:{parts.port or 6379}"
        try:
            self._client = redis.Redis.from_url(url, socket_timeout=socket_timeout,
                                                socket_connect_timeout=socket_timeout, retry=Retry(NoBackoff(), 0))
        except ValueError as exc:
            raise ValueError(f"bad redis URL {self.url!r}: {exc}") from None
        self._prefix = f"tc:{namespace}:".encode()
        # a manifest may not name more chunks than this tier's capacity needs (a hostile one could name 2**64)
        self._max_chunks = min(_MAX_CHUNKS, max(1, -(-capacity // chunk_size)))
        self._used_key, self._log_key = self._prefix + b"used", self._prefix + b"log"
        self._epoch_key, self._epoch = self._prefix + b"epoch", None  # names the log generation last read
        self._backoff = 0.0
        self._down_until = 0.0
        self._last_used = 0
        try:
            self._client.ping()
        except (redis.RedisError, OSError) as exc:
            if required:
                reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                raise ConnectionError(f"redis at {self.url} is unreachable and was required: {reason}") from None
            self._unreachable(exc)

    # ------------------------------------------------------------------ failure handling
    def _call(self, kind: str, fn: Callable[[], T], default: T) -> T:
        """``fn()``, or ``default`` while backing off from an unreachable server or on any Redis error."""
        if time.monotonic() < self._down_until:
            return default
        try:
            result = fn()
        except _UNREACHABLE as exc:
            self._unreachable(exc)
            return default
        except redis.RedisError as exc:
            self._warn(f"{kind}:{type(exc).__name__}", "redis at %s: %s failed (%s); treating as a miss",
                       self.address, kind, exc)
            return default
        if self._backoff:
            log.info("redis at %s reachable again", self.address)
            self._backoff = 0.0
            self._warned.discard("unreachable")  # the next outage gets its own warning
        return result

    def _unreachable(self, exc: BaseException) -> None:
        self._warn("unreachable", "redis at %s unreachable; continuing on local tiers (%s)", self.address,
                   type(exc).__name__)
        self._backoff = min(max(2 * self._backoff, _FIRST_BACKOFF), _MAX_BACKOFF)
        self._down_until = time.monotonic() + self._backoff
        self._client.connection_pool.disconnect()  # stale sockets would fail once more after a restart

    # ------------------------------------------------------------------ keys
    def _value_key(self, key: bytes) -> bytes:
        return self._prefix + b"v:" + key

    def _manifest_key(self, key: bytes) -> bytes:
        return self._prefix + b"m:" + key

    def _chunk_keys(self, key: bytes, size: int, chunk: int) -> list[bytes]:
        return [self._prefix + b"c:" + key + b":c%d" % i for i in range(-(-size // chunk))]

    def _manifest(self, raw: bytes | None) -> tuple[int, int] | None:
        """(size, chunk size) from a stored manifest, None if absent or malformed."""
        if raw is None:
            return None
        if len(raw) == _MANIFEST.size:
            size, chunk = _MANIFEST.unpack(raw)
            if chunk and -(-size // chunk) <= self._max_chunks:
                return size, chunk
        self._warn("manifest", "redis at %s: malformed chunk manifest; treating as a miss", self.address)
        return None

    # ------------------------------------------------------------------ Tier
    def get(self, key: bytes) -> bytes | None:
        check_key(key)
        return self._call("read", lambda: self._read(key), None)

    def _read(self, key: bytes) -> bytes | None:
        value, raw = self._client.mget([self._value_key(key), self._manifest_key(key)])
        manifest = self._manifest(raw)
        if value is not None or manifest is None:
            return value
        size, chunk = manifest
        parts = self._client.mget(self._chunk_keys(key, size, chunk))
        if any(p is None for p in parts) or sum(map(len, parts)) != size:
            self._warn("chunks", "redis at %s: a chunked value lost chunks; treating as a miss", self.address)
            return None
        return b"".join(parts)

    def put(self, key: bytes, value: bytes | bytearray | memoryview) -> bool:
        check_key(key)
        src = as_bytes_view(value)
        return self._call("write", lambda: self._write(key, src), False)

    def _write(self, key: bytes, src: memoryview) -> bool:
        vkey, mkey = self._value_key(key), self._manifest_key(key)
        with self._client.pipeline(transaction=True) as pipe:
            for _ in range(_WATCH_TRIES):
                try:
                    pipe.watch(vkey, mkey)
                    if pipe.exists(vkey, mkey):
                        return True
                    pipe.multi()
                    if len(src) <= self.chunk_size:
                        pipe.set(vkey, src)
                    else:
                        chunks = self._chunk_keys(key, len(src), self.chunk_size)
                        for i, ckey in enumerate(chunks):
                            pipe.set(ckey, src[i * self.chunk_size:(i + 1) * self.chunk_size])
                        pipe.set(mkey, _MANIFEST.pack(len(src), self.chunk_size))
                    pipe.incrby(self._used_key, len(src))
                    pipe.execute()
                    return True
                except redis.WatchError:
                    continue  # another client stored or removed this key meanwhile: look again
        return False

    def delete(self, key: bytes) -> None:
        check_key(key)
        self._call("delete", lambda: self._remove(key), None)

    def _remove(self, key: bytes) -> None:
        vkey, mkey = self._value_key(key), self._manifest_key(key)
        with self._client.pipeline(transaction=True) as pipe:
            for _ in range(_WATCH_TRIES):
                try:
                    pipe.watch(vkey, mkey)
                    if pipe.exists(vkey):
                        size, extra = pipe.strlen(vkey), []
                    else:
                        manifest = self._manifest(pipe.get(mkey))
                        size, extra = (manifest[0], self._chunk_keys(key, *manifest)) if manifest else (0, [])
                    pipe.multi()
                    pipe.delete(vkey, mkey, *extra)
                    if size:
                        pipe.decrby(self._used_key, size)
                    pipe.execute()
                    return
                except redis.WatchError:
                    continue

    def __contains__(self, key: bytes) -> bool:
        check_key(key)
        return self._call("read", lambda: self._client.exists(self._value_key(key), self._manifest_key(key)) > 0,
                          False)

    def used_bytes(self) -> int:
        """Stored value bytes as the server counts them (the last known count while it is unreachable)."""
        used = self._call("read", lambda: int(self._client.get(self._used_key) or 0), None)
        if used is not None:
            self._last_used = used
        return self._last_used

    def append_log(self, record: bytes) -> None:
        self._call("log append", lambda: self._append(record), None)

    def _append(self, record: bytes) -> None:
        with self._client.pipeline(transaction=True) as pipe:
            pipe.set(self._epoch_key, os.urandom(16).hex(), nx=True)  # a new log starts a new generation
            pipe.rpush(self._log_key, record)
            pipe.execute()

    def read_log(self, start: int) -> tuple[list[bytes], int]:
        check_start(start)
        got = self._call("log read", lambda: self._read_log(start), None)
        return ([], start) if got is None else got

    def _read_log(self, start: int) -> tuple[list[bytes], int]:
        with self._client.pipeline(transaction=True) as pipe:
            epoch, records = pipe.get(self._epoch_key).lrange(self._log_key, start, -1).execute()
        if start and self._epoch not in (None, epoch):  # the server lost the log (restarted empty): read anew
            log.info("redis at %s: the catalog log was reset; reading it from the start", self.address)
            records, start = self._client.lrange(self._log_key, 0, -1), 0
        self._epoch = epoch
        return records, start + len(records)

    def close(self) -> None:
        self._client.close()

    def __repr__(self) -> str:
        return f"RedisTier({self.url!r}, capacity={self.capacity}, namespace={self.namespace!r})"
