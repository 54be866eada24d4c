"""128-bit xxh3 keys: rolling prefix keys of an architecture, layer keys, payload digests.

All prefix keys of a sequence come from one pass: key[k] = xxh3_128(key[k-1] || value_k), so the L
prefixes of an architecture cost O(L), and two architectures share key[k] iff they agree on 0..k-1.
"""
from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence

import xxhash

_pack_pos = struct.Struct("<qq").pack
MAX_NAMESPACE_BYTES = 256


def check_namespace(namespace: object) -> str:
    """``namespace`` if it can name a search on every tier; ValueError naming it otherwise: a non-empty string
    of at most 256 UTF-8 bytes (no lone surrogates), without ':' (Redis keys are ``tc:<namespace>:...``, so
    ``a:b`` would read namespace ``a``'s keys; refused on every tier alike) or NUL."""
    if not isinstance(namespace, str) or not namespace:
        raise ValueError(f"namespace must be a non-empty string, got {namespace!r:.80}")
    try:
        size = len(namespace.encode())
    except UnicodeEncodeError as exc:
        raise ValueError(f"namespace {namespace!r:.80} is not valid UTF-8 text ({exc.reason} at {exc.start})") \
            from None
    if size > MAX_NAMESPACE_BYTES or ":" in namespace or "\x00" in namespace:
        raise ValueError(f"namespace must be at most {MAX_NAMESPACE_BYTES} UTF-8 bytes without ':' or NUL, got "
                         f"{namespace!r:.80}")
    return namespace


def namespace_key(namespace: str) -> bytes:
    """Root of every key of one search (a search space id or a user namespace)."""
    return xxhash.xxh3_128_digest(b"tensorcache/ns\x00" + namespace.encode())


def prefix_keys(namespace: str, arch: Sequence[int]) -> list[bytes]:
    """``keys[k]`` identifies the prefix ``arch[:k]`` (k = 0..len(arch)); one rolling pass."""
    key = namespace_key(namespace)
    keys = [key]
    for pos, value in enumerate(arch):
        key = xxhash.xxh3_128_digest(key + _pack_pos(pos, int(value)))
        keys.append(key)
    return keys


def positions_key(namespace: str, arch: Sequence[int], positions: Iterable[int]) -> bytes:
    """Key of the values of ``arch`` at an arbitrary set of positions (used by non-prefix layers)."""
    h = xxhash.xxh3_128(namespace_key(namespace) + b"set")
    for pos in sorted(set(positions)):
        h.update(_pack_pos(pos, int(arch[pos])))
    return h.digest()


def layer_suffix(name: str) -> bytes:
    """What the name of a layer adds to the key of the positions it depends on (see ``layer_key``)."""
    return b"\x00layer\x00" + name.encode()


def layer_key(context: bytes, suffix: bytes) -> bytes:
    """Key of a layer given the key of the positions it depends on and its name's ``layer_suffix``."""
    return xxhash.xxh3_128_digest(context + suffix)


blob_digest = xxhash.xxh3_128_digest  # ``digest`` of one buffer, the C function itself (a put hashes hundreds)


def digest(*parts: bytes | memoryview) -> bytes:
    """xxh3-128 of the concatenation of ``parts`` (payload addressing)."""
    if len(parts) == 1:
        return xxhash.xxh3_128_digest(parts[0])
    h = xxhash.xxh3_128()
    for part in parts:
        h.update(part)
    return h.digest()
