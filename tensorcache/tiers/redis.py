"""Shared tier on a Redis server, seen by every node of a search.

Keys live under ``tc:{namespace}:`` so searches sharing a server never collide: ``v:<key>`` holds a
whole payload, or for one over ``chunk_size`` ``m:<key>`` holds a manifest and ``c:<key>:c<i>`` the
chunks; ``b:`` prefixes the tier's books (``books``). Each hold or release is one WATCH/MULTI/EXEC
transaction over payloads and books together, retried when another client touched what it read. A
value's length is read (STRLEN, or its manifest) before its bytes. An unreachable server is warned about
once per outage, then skipped for a back-off period (0.5 s doubling to 30 s).
"""
from __future__ import annotations

import random
import struct
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar
from urllib.parse import urlsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from ..keys import check_namespace
from .base import SharedTier, StoreFailure, log
from .books import WRONG_LENGTH, Txn

T = TypeVar("T")

_MANIFEST = struct.Struct(">QQ")  # total bytes, chunk size
# The lengths of a hit's plain values in one command, however many (-1: not a plain value, absent or chunked
# under a manifest): a pipeline of one STRLEN per value costs the client about as much per command as the
# bytes of a small value. The values themselves then come in one MGET, not through the script, which would
# copy them on the server twice more.
_LENGTHS = """
local out = {}
for i, key in ipairs(KEYS) do
  local n = redis.call('STRLEN', key)
  if n == 0 and redis.call('EXISTS', key) == 0 then n = -1 end
  out[i] = n
end
return out
"""
_MAX_CHUNK = 512 * 2**20  # Redis's largest string
_MAX_CHUNKS = 2**24
_FIRST_BACKOFF, _MAX_BACKOFF = 0.5, 30.0
_WATCH_TRIES = 100  # every hold moves the shared counters, so concurrent writers retry often
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


def check_url(url: object) -> None:
    """ValueError naming ``url`` (password hidden) unless it is a Redis URL redis-py can connect with
    (``redis://``, ``rediss://`` or ``unix://``, a numeric port)."""
    if not isinstance(url, str):
        raise ValueError(f"bad redis URL {url!r}: expected a redis://host:port/db string")
    try:
        redis.connection.parse_url(url)
    except ValueError as exc:
        raise ValueError(f"bad redis URL {redact(url)!r}: {exc}") from None


def check_reachable(url: str, socket_timeout: float = 2.0) -> None:
    """ConnectionError naming ``url`` (password hidden) when no Redis server answers there now: what a search
    that requires its Redis tier checks before it starts."""
    check_url(url)
    client = _client(url, socket_timeout)
    try:
        client.ping()
    except (redis.RedisError, OSError) as exc:
        raise _required_down(url, exc) from None
    finally:
        client.close()


def _client(url: str, socket_timeout: float) -> redis.Redis:
    """A client of ``url`` that fails fast: no retries, ``socket_timeout`` seconds to connect and per call."""
    return redis.Redis.from_url(url, socket_timeout=socket_timeout, socket_connect_timeout=socket_timeout,
                                retry=Retry(NoBackoff(), 0))


def _reason(exc: redis.RedisError) -> str:
    """The error's type and the server's words, without the command redis-py quotes into a pipeline's error
    (its arguments are keys, records and payload bytes)."""
    said = str(exc).rpartition(" of pipeline caused error: ")[2]
    return f"{type(exc).__name__}: {said}"


def _required_down(url: str, exc: BaseException) -> ConnectionError:
    """The error of a required Redis that does not answer."""
    reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return ConnectionError(f"redis at {redact(url)} is unreachable and was required: {reason}")


class RedisTier(SharedTier):
    """A payload store with its own books on the Redis server at ``url`` (``redis://``, ``rediss://`` or
    ``unix://``). With ``required=True`` an unreachable server at construction raises ConnectionError;
    otherwise the tier warns and reports misses until the server answers."""

    def __init__(self, url: str, capacity: int, namespace: str, chunk_size: int = 256 * 2**20,
                 required: bool = False, socket_timeout: float = 2.0) -> None:
        super().__init__("redis", capacity)
        check_namespace(namespace)
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or not 0 < chunk_size <= _MAX_CHUNK:
            raise ValueError(f"chunk_size must be an int in 1..{_MAX_CHUNK}, got {chunk_size!r}")
        check_url(url)
        self.url, self.namespace, self.chunk_size = redact(url), namespace, chunk_size
        parts = urlsplit(url)
        self.address = parts.path if parts.scheme == "unix" else f"{parts.hostname}:{parts.port or 6379}"
        self._client = _client(url, socket_timeout)
        self._lengths: Any = self._client.register_script(_LENGTHS)  # None once the server refuses scripts
        self.prefix = f"tc:{namespace}:".encode()
        self._backoff = 0.0
        self._down_until = 0.0
        try:
            self._client.ping()
        except (redis.RedisError, OSError) as exc:
            if required:
                raise _required_down(url, exc) from None
            self._unreachable(exc)
        else:
            self._check_on_open()

    def _max_chunks(self) -> int:
        """A manifest may not name more chunks than this tier's capacity needs (a hostile one could name 2**64)."""
        return min(_MAX_CHUNKS, max(1, -(-self.capacity // self.chunk_size)))

    # ------------------------------------------------------------------ transactions and failures
    def _run(self, write: bool, body: Callable[[Txn], T]) -> T:
        if time.monotonic() < self._down_until:
            raise StoreFailure("unreachable (backing off)", reported=True)
        try:
            result = self._transact(write, body)
        except _UNREACHABLE as exc:
            self._unreachable(exc)
            raise StoreFailure(f"unreachable ({type(exc).__name__})", reported=True) from None
        except redis.RedisError as exc:
            raise StoreFailure(_reason(exc)) from None
        if self._backoff:
            log.info("redis at %s reachable again", self.address)
            self._backoff = 0.0
            self._warned.discard("unreachable")  # the next outage gets its own warning
        return result

    def _transact(self, write: bool, body: Callable[[Txn], T]) -> T:
        if not write:
            return body(_RedisTxn(self, self._client, watching=False))
        with self._client.pipeline(transaction=True) as pipe:
            for attempt in range(_WATCH_TRIES):
                txn = _RedisTxn(self, pipe, watching=True)
                try:
                    result = body(txn)
                    pipe.multi()
                    for op in txn.writes:
                        op(pipe)
                    pipe.execute()
                    return result
                except redis.WatchError:
                    pipe.reset()  # another client changed what this transaction read: run it again
                    time.sleep(random.uniform(0, 0.0005 * attempt))  # jittered, so writers fall out of step
        raise StoreFailure("other clients kept changing the same keys")

    def _unreachable(self, exc: BaseException) -> None:
        self._warn("unreachable", "redis at %s unreachable; continuing on local tiers (%s)", self.address,
                   type(exc).__name__)
        self._backoff = min(max(2 * self._backoff, _FIRST_BACKOFF), _MAX_BACKOFF)
        self._down_until = time.monotonic() + self._backoff
        self._client.connection_pool.disconnect()  # stale sockets would fail once more after a restart

    def manifest(self, raw: bytes | None) -> tuple[int, int] | None:
        """(size, chunk size) from a stored manifest, None if absent or malformed."""
        if raw is None:
            return None
        if len(raw) == _MANIFEST.size:
            size, chunk = _MANIFEST.unpack(raw)
            if chunk and -(-size // chunk) <= self._max_chunks():
                return size, chunk
        self._warn("manifest", "redis at %s: malformed chunk manifest; treating as a miss", self.address)
        return None

    def close(self) -> None:
        self._client.close()

    def __repr__(self) -> str:
        return f"RedisTier({self.url!r}, capacity={self.capacity}, namespace={self.namespace!r})"


class _RedisTxn(Txn):
    """Books and payloads under one namespace: reads go to the server (watched in a write transaction),
    writes are queued for MULTI/EXEC and seen by this transaction's later reads."""

    logs = True

    def __init__(self, tier: RedisTier, client: Any, watching: bool) -> None:
        self.tier, self.client, self.watching = tier, client, watching
        self.p = tier.prefix
        self.writes: list[Callable[[Any], object]] = []
        self.pending: dict[bytes, bytes | None] = {}  # book key -> value written here (None: deleted)
        self.fetched: dict[bytes, bytes | None] = {}  # book key -> value read (and watched) here
        self.blobs: dict[bytes, int | None] = {}  # digest -> size written here (None: deleted)
        self.sizes: dict[bytes, tuple[int | None, tuple[int, int] | None]] = {}  # digest -> size, manifest read

    def _watch(self, *keys: bytes) -> None:
        if self.watching:
            self.client.watch(*keys)

    def get(self, key: bytes) -> bytes | None:
        if key in self.pending:
            return self.pending[key]
        if key not in self.fetched:
            self.prefetch([key])
        return self.fetched[key]

    def prefetch(self, keys: Sequence[bytes]) -> None:
        wanted = [k for k in dict.fromkeys(keys) if k not in self.pending and k not in self.fetched]
        if not wanted:
            return
        full = [self.p + b"b:" + k for k in wanted]
        self._watch(*full)
        self.fetched.update(zip(wanted, self.client.mget(full)))

    def prefetch_blobs(self, digests: Sequence[bytes]) -> None:
        wanted = [d for d in dict.fromkeys(digests) if d not in self.blobs and d not in self.sizes]
        if not wanted:
            return
        keys = [self._keys_of(d) for d in wanted]
        self._watch(*(k for pair in keys for k in pair))
        with self.tier._client.pipeline(transaction=False) as pipe:
            for vkey, mkey in keys:
                pipe.strlen(vkey).exists(vkey).get(mkey)
            got = pipe.execute()
        for n, d in enumerate(wanted):
            size, exists, raw = got[3 * n:3 * n + 3]
            if size or exists:
                self.sizes[d] = (size, None)
            else:
                manifest = self.tier.manifest(raw)
                self.sizes[d] = (None, None) if manifest is None else (manifest[0], manifest)

    def get_blobs(self, wanted: Sequence[tuple[bytes, int | None]]) -> list[Any]:
        """Two round trips for every plain value asked, however many: their lengths (a wrong length is found
        before the bytes are fetched), then one MGET for the values of the right length. The lengths come from
        one server-side script; where the server refuses scripts (warned once) from a pipeline of a few
        commands per value, which also reads the manifests. A chunked value's chunks then come in one MGET
        each."""
        if self.watching:  # a write transaction watches what it reads: the generic way
            return super().get_blobs(wanted)
        if self.tier._lengths is not None:
            self._plain_lengths([d for d, _ in wanted])
        self.prefetch_blobs([d for d, _ in wanted])  # what the script did not find: absent, or chunked
        plain = list(dict.fromkeys(d for d, size in wanted if d not in self.blobs and self.sizes[d][1] is None
                                   and self.sizes[d][0] is not None and size in (None, self.sizes[d][0])))
        values = dict(zip(plain, self.client.mget([self._keys_of(d)[0] for d in plain]))) if plain else {}
        return [self.get_blob(d, size) if values.get(d) is None else
                WRONG_LENGTH if size is not None and len(values[d]) != size else values[d] for d, size in wanted]

    def set(self, key: bytes, value: bytes) -> None:
        self.pending[key] = value
        self.writes.append(lambda pipe, k=self.p + b"b:" + key, v=value: pipe.set(k, v))

    def delete(self, key: bytes) -> None:
        self.pending[key] = None
        self.writes.append(lambda pipe, k=self.p + b"b:" + key: pipe.delete(k))

    def keys(self, prefix: bytes) -> Iterator[bytes]:
        return self._scan(b"b:", prefix)

    def _scan(self, area: bytes, prefix: bytes = b"") -> Iterator[bytes]:
        """Keys under ``area`` + ``prefix``, relative to ``area`` (SCAN: not atomic, used by audits only)."""
        full = self.p + area + prefix
        pattern = b"".join(b"\\" + bytes([c]) if c in b"*?[]\\" else bytes([c]) for c in full) + b"*"
        skip = len(self.p) + len(area)
        return iter([k[skip:] for k in self.tier._client.scan_iter(match=pattern, count=1000)])

    def _plain_lengths(self, digests: Sequence[bytes]) -> None:
        """Learn the lengths of the plain values among ``digests`` by the tier's script, in one command; nothing
        if the server refuses scripts (warned once: the tier stops asking)."""
        wanted = [d for d in dict.fromkeys(digests) if d not in self.blobs and d not in self.sizes]
        if not wanted:
            return
        try:
            got = self.tier._lengths(keys=[self._keys_of(d)[0] for d in wanted])
        except redis.ResponseError as exc:
            if "WRONGTYPE" in str(exc):
                raise  # a key of another type: a failed read, as on the other way
            self.tier._lengths = None  # scripts disabled, not permitted, or a proxy that passes none on
            self.tier._warn("scripts", "redis at %s refuses scripts (%s); reading lengths in a pipeline",
                            self.tier.address, _reason(exc))
            return
        for d, n in zip(wanted, got):
            if n >= 0:
                self.sizes[d] = (n, None)

    def _keys_of(self, digest: bytes) -> tuple[bytes, bytes]:
        return self.p + b"v:" + digest, self.p + b"m:" + digest

    def _size_and_manifest(self, digest: bytes) -> tuple[int | None, tuple[int, int] | None]:
        if digest not in self.sizes:
            self.prefetch_blobs([digest])
        return self.sizes[digest]

    def blob_size(self, digest: bytes) -> int | None:
        if digest in self.blobs:
            return self.blobs[digest]
        return self._size_and_manifest(digest)[0]

    def get_blob(self, digest: bytes, size: int | None = None) -> bytes | None:
        stored, manifest = self._size_and_manifest(digest)
        if stored is None:
            return None
        if size is not None and stored != size:
            return WRONG_LENGTH
        if manifest is None:
            return self.client.get(self._keys_of(digest)[0])
        parts = self.client.mget(self._chunk_keys(digest, *manifest))
        if any(p is None for p in parts) or sum(map(len, parts)) != stored:
            self.tier._warn("chunks", "redis at %s: a chunked value lost chunks; treating as a miss",
                            self.tier.address)
            return None
        return b"".join(parts)

    def _chunk_keys(self, digest: bytes, size: int, chunk: int) -> list[bytes]:
        return [self.p + b"c:" + digest + b":c%d" % i for i in range(-(-size // chunk))]

    def put_blob(self, digest: bytes, value: Any) -> None:
        src = memoryview(value).cast("B")
        vkey, mkey = self._keys_of(digest)
        chunk = self.tier.chunk_size
        self.blobs[digest] = len(src)
        if len(src) <= chunk:
            self.writes.append(lambda pipe: pipe.set(vkey, src))
            return
        keys = self._chunk_keys(digest, len(src), chunk)

        def write(pipe: Any) -> None:
            for i, ckey in enumerate(keys):
                pipe.set(ckey, src[i * chunk:(i + 1) * chunk])
            pipe.set(mkey, _MANIFEST.pack(len(src), chunk))

        self.writes.append(write)

    def delete_blob(self, digest: bytes) -> int | None:
        size = self.blob_size(digest)
        _, manifest = self._size_and_manifest(digest)
        keys = [*self._keys_of(digest), *(self._chunk_keys(digest, *manifest) if manifest else [])]
        self.blobs[digest] = None
        self.writes.append(lambda pipe: pipe.delete(*keys))
        return size

    def blob_digests(self) -> Iterator[bytes]:
        return iter([*self._scan(b"v:"), *self._scan(b"m:")])
