"""Tensor payloads: a validated header plus raw bytes, addressed by the xxh3-128 digest of both.

Layout: ``b"TCP1" | u32 header length | JSON {"dtype", "shape", "nbytes"} | raw bytes``. The store key is
the digest of the whole blob, so identical tensors (same dtype, shape and bytes) are stored once, and a
read recomputes it. Nothing is ever unpickled, and a header is checked before its sizes are trusted: a
decoded tensor is a view of the bytes that were read, never an allocation the header asked for.
"""
from __future__ import annotations

import functools
import json
import math
import struct
from typing import Any

import numpy as np

from .keys import blob_digest

MAGIC = b"TCP1"
_LEN = struct.Struct("<I")
MAX_HEADER = 4096
MAX_NDIM = 8

# dtype name -> numpy dtype used to hold the raw bytes (bfloat16 travels as its 16-bit pattern)
DTYPES: dict[str, np.dtype] = {
    name: np.dtype(np_name)
    for name, np_name in {
        "float16": "float16", "bfloat16": "uint16", "float32": "float32", "float64": "float64",
        "int8": "int8", "uint8": "uint8", "int16": "int16", "int32": "int32", "int64": "int64",
        "bool": "bool", "complex64": "complex64",
    }.items()
}


class PayloadError(ValueError):
    """A blob failed validation (bad header, wrong length, digest mismatch)."""


def to_array(tensor: Any) -> tuple[np.ndarray, str]:
    """A C-contiguous, native-byte-order host numpy array of ``tensor`` (numpy or torch) and its dtype name;
    TypeError/ValueError naming what cannot be stored."""
    if isinstance(tensor, np.ndarray):
        arr = tensor if tensor.dtype.isnative else tensor.astype(tensor.dtype.newbyteorder("="))
        arr, name = _contiguous(arr), tensor.dtype.name
    elif hasattr(tensor, "detach"):  # torch.Tensor, without importing torch
        name = _TORCH_NAMES.get(tensor.dtype) or _torch_name(tensor.dtype)
        if tensor.is_cpu and not tensor.requires_grad and name != "bfloat16":
            arr = _contiguous(tensor.numpy())  # what detach().cpu() would give: the same memory, fewer calls
        else:
            t = tensor.detach()
            if name == "bfloat16":
                import torch

                t = t.view(torch.int16)
            arr = _contiguous(t.cpu().numpy())
            if name == "bfloat16":
                arr = arr.view(np.uint16)
    else:
        raise TypeError(f"expected a numpy array or torch tensor, got {type(tensor).__name__}")
    if name not in DTYPES:
        raise TypeError(f"unsupported dtype {name!r}; supported: {sorted(DTYPES)}")
    if arr.ndim > MAX_NDIM:
        raise ValueError(f"a tensor of {arr.ndim} dimensions {arr.shape}: at most {MAX_NDIM} can be stored")
    return arr, name


_TORCH_NAMES: dict[Any, str] = {}  # torch dtype -> its name without "torch.", filled as dtypes are met
_AS_IS: dict[Any, str] = {}  # torch dtype -> its name, for the supported ones a CPU tensor's numpy() holds as they are


def _torch_name(dtype: Any) -> str:
    """A torch dtype's name without "torch.", remembered (and in ``_AS_IS`` when it needs no conversion)."""
    name = _TORCH_NAMES[dtype] = str(dtype).removeprefix("torch.")
    if name in DTYPES and name != "bfloat16":
        _AS_IS[dtype] = name
    return name


def _contiguous(arr: np.ndarray) -> np.ndarray:
    """C-contiguous without promoting 0-d arrays to 1-d (np.ascontiguousarray would)."""
    return arr if arr.flags.c_contiguous else arr.copy(order="C")


@functools.lru_cache(maxsize=4096)
def header(dtype: str, shape: tuple[int, ...], nbytes: int) -> bytes:
    """The canonical header bytes (magic, length, JSON) for one tensor (memoised: writers and records
    name the same few shapes over and over)."""
    meta = json.dumps({"dtype": dtype, "shape": list(shape), "nbytes": nbytes}, separators=(",", ":")).encode()
    return MAGIC + _LEN.pack(len(meta)) + meta


def encode(tensor: Any) -> tuple[bytes, bytes, dict[str, Any]]:
    """Return (digest, blob, ref) for a tensor; ``ref`` is what a catalog record keeps about it."""
    key, blob, dtype, shape, nbytes, kind = encode_parts(tensor)
    return key, blob, {"digest": key.hex(), "dtype": dtype, "shape": list(shape), "nbytes": nbytes, "kind": kind}


def encode_parts(tensor: Any) -> tuple[bytes, bytes, str, tuple[int, ...], int, str]:
    """(digest, blob, dtype name, shape, nbytes, kind) of a tensor, with no per-call dict (a put encodes
    hundreds). The blob is immutable ``bytes`` made in one copy, so a process-local tier may keep it as it is.
    A CPU torch tensor of a plain dtype, the common case, takes a short way to ``to_array``'s array."""
    if isinstance(tensor, np.ndarray):
        arr, dtype = to_array(tensor)
        kind = "numpy"
    else:
        try:
            dtype = _AS_IS.get(tensor.dtype)
        except (AttributeError, TypeError):  # no dtype, or an unhashable one: to_array says what is wrong
            dtype = None
        kind = "torch"
        if dtype is not None and tensor.is_cpu and not tensor.requires_grad:
            arr = tensor.numpy()  # the tensor's own memory, as to_array would give it
            if not arr.flags.c_contiguous or arr.ndim > MAX_NDIM:
                arr, dtype = to_array(tensor)
        else:
            arr, dtype = to_array(tensor)
    shape, nbytes = arr.shape, arr.nbytes
    blob = b"".join((header(dtype, shape, nbytes), arr))  # a C-contiguous array is a flat byte buffer to join
    return blob_digest(blob), blob, dtype, shape, nbytes, kind


def check_meta(dtype: Any, shape: Any, nbytes: Any, max_nbytes: int) -> tuple[np.dtype, tuple[int, ...], int]:
    """Validate dtype/shape/length claims from an untrusted source; return them typed."""
    if not isinstance(dtype, str) or dtype not in DTYPES:
        raise PayloadError(f"unknown dtype {dtype!r}")
    if not isinstance(shape, list | tuple) or len(shape) > MAX_NDIM:
        raise PayloadError(f"bad shape {shape!r}")
    if not all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d <= max_nbytes for d in shape):
        raise PayloadError(f"bad shape {shape!r}")
    if not isinstance(nbytes, int) or isinstance(nbytes, bool) or not 0 <= nbytes <= max_nbytes:
        raise PayloadError(f"bad byte length {nbytes!r} (limit {max_nbytes})")
    np_dtype = DTYPES[dtype]
    if math.prod(shape) * np_dtype.itemsize != nbytes:
        raise PayloadError(f"shape {shape} of {dtype} does not make {nbytes} bytes")
    return np_dtype, tuple(shape), nbytes


def read_header(blob: bytes | bytearray | memoryview, max_nbytes: int = 2**40) -> tuple[str, tuple[int, ...], int]:
    """The dtype name, shape and body offset of a payload; PayloadError unless the header is valid and the
    blob holds exactly the bytes it announces."""
    view = memoryview(blob).cast("B")
    if len(view) < 8 or view[:4] != MAGIC:
        raise PayloadError("not a tensorcache payload (bad magic)")
    (hlen,) = _LEN.unpack(view[4:8])
    if hlen > MAX_HEADER or 8 + hlen > len(view):
        raise PayloadError(f"bad header length {hlen}")
    try:
        meta = json.loads(bytes(view[8 : 8 + hlen]))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:  # RecursionError: nesting bomb
        raise PayloadError(f"unreadable header: {exc}") from None
    if not isinstance(meta, dict):
        raise PayloadError("header is not an object")
    _, shape, nbytes = check_meta(meta.get("dtype"), meta.get("shape"), meta.get("nbytes"), max_nbytes)
    offset = 8 + hlen
    if len(view) - offset != nbytes:
        raise PayloadError(f"length mismatch: header says {nbytes} bytes, blob holds {len(view) - offset}")
    return meta["dtype"], shape, offset


def decode(key: bytes, blob: bytes | bytearray | memoryview, *, verify: bool = True, max_nbytes: int = 2**40,
           expect: tuple[str, tuple[int, ...], int] | None = None) -> tuple[np.ndarray, str]:
    """A read-only array viewing ``blob`` and its dtype name; PayloadError on any inconsistency.

    ``expect``: the (dtype, shape, nbytes) a validated record says the payload holds; a header that is
    byte for byte the canonical one for them is taken as read, others are parsed."""
    view = blob if type(blob) is bytes else memoryview(blob).cast("B")  # bytes: compared as they are
    head = None if expect is None else header(expect[0], expect[1], expect[2])
    if head is not None and len(view) == len(head) + expect[2] and (
            view.startswith(head) if type(view) is bytes else view[: len(head)] == head):
        dtype, shape, offset = expect[0], expect[1], len(head)
    else:
        dtype, shape, offset = read_header(view, max_nbytes)
    if verify and blob_digest(view) != key:
        raise PayloadError("digest mismatch")
    arr = np.frombuffer(view, DTYPES[dtype], math.prod(shape), offset)  # by position: half the cost of by name
    if len(shape) != 1:
        arr = arr.reshape(shape)
    if type(blob) is not bytes:  # a view of immutable bytes is read-only already
        arr.flags.writeable = False
    return arr, dtype
