import json
import struct

import numpy as np
import pytest
import torch
from hypothesis import given, strategies as st

from tensorcache.payload import MAGIC, PayloadError, decode, encode, header


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.int64, torch.bool, torch.uint8])
def test_torch_round_trip_keeps_dtype_shape_and_bits(dtype):
    t = (torch.randn(3, 5) * 10).to(dtype)
    key, blob, ref = encode(t)
    arr, name = decode(key, bytes(blob))
    assert name == str(dtype).removeprefix("torch.") == ref["dtype"]
    assert arr.shape == (3, 5) and not arr.flags.writeable
    back = torch.from_numpy(arr.copy())
    if dtype == torch.bfloat16:
        back = back.view(torch.bfloat16)
    assert torch.equal(back, t)


@given(st.lists(st.floats(allow_nan=False, width=32), max_size=50))
def test_identical_tensors_share_a_key_and_different_ones_do_not(values):
    a = np.array(values, dtype=np.float32)
    assert encode(a)[0] == encode(a.copy())[0]
    assert encode(a)[0] != encode(a.reshape(1, -1))[0]  # same bytes, other shape: another payload
    b = np.append(a, np.float32(1.0))
    assert encode(a)[0] != encode(b)[0]


def test_flipped_byte_and_truncation_are_detected():
    key, blob, _ = encode(np.arange(100, dtype=np.float32))
    bad = bytearray(blob)
    bad[-7] ^= 0x40
    with pytest.raises(PayloadError, match="digest"):
        decode(key, bytes(bad))
    with pytest.raises(PayloadError, match="length"):
        decode(key, bytes(blob[:-4]))
    arr, _ = decode(key, bytes(bad), verify=False)  # unverified reads are possible but not the default
    assert arr.shape == (100,)


def _forged(meta: dict, payload: bytes = b"") -> bytes:
    raw = json.dumps(meta).encode()
    return MAGIC + struct.pack("<I", len(raw)) + raw + payload


@pytest.mark.parametrize("meta,match", [
    ({"dtype": "object", "shape": [1], "nbytes": 8}, "dtype"),
    ({"dtype": "float32", "shape": [2**40, 2**40], "nbytes": 4}, "shape|bytes"),
    ({"dtype": "float32", "shape": [-1], "nbytes": 4}, "shape"),
    ({"dtype": "float32", "shape": [1], "nbytes": 2**50}, "length"),
    ({"dtype": "float32", "shape": [3], "nbytes": 8}, "make"),
    ({"dtype": "float32", "shape": [1] * 20, "nbytes": 4}, "shape"),
])
def test_hostile_headers_are_rejected_before_trusting_sizes(meta, match):
    with pytest.raises(PayloadError, match=match):
        decode(b"\0" * 16, _forged(meta, b"\0" * 4))


def test_garbage_is_not_a_payload():
    for junk in [b"", b"PK\x03\x04" + b"\0" * 20, b"\x80\x04\x95pickle", MAGIC + struct.pack("<I", 10**6)]:
        with pytest.raises(PayloadError):
            decode(b"\0" * 16, junk)


def test_header_is_canonical():
    meta = b'{"dtype":"float32","shape":[2,3],"nbytes":24}'
    assert header("float32", (2, 3), 24) == b"TCP1" + struct.pack("<I", len(meta)) + meta  # these bytes, always
    assert len(meta) == 45
    with pytest.raises(TypeError, match="unsupported dtype|expected"):
        encode([1, 2, 3])


def test_byte_order_is_normalised_and_dimensions_are_limited():
    big = np.arange(6, dtype=">f4").reshape(2, 3)
    key, blob, ref = encode(big)
    arr, _ = decode(key, bytes(blob))
    assert arr.dtype.isnative and np.array_equal(arr, big) and key == encode(big.astype("<f4"))[0]
    with pytest.raises(ValueError, match="9 dimensions"):
        encode(np.zeros([1] * 9, np.float32))
    assert encode(np.zeros([1] * 8, np.float32))[2]["shape"] == [1] * 8  # the reader's limit is the writer's


def test_zero_dim_tensors_keep_their_shape():
    key, blob, ref = encode(torch.tensor(7, dtype=torch.int64))
    arr, _ = decode(key, bytes(blob))
    assert arr.shape == () and ref["shape"] == [] and int(arr) == 7


def test_an_expected_header_is_a_shortcut_never_an_override():
    from tensorcache.keys import digest

    key, blob, _ = encode(np.arange(6, dtype=np.float32).reshape(2, 3))
    assert decode(key, blob, expect=("float32", (2, 3), 24))[0].shape == (2, 3)
    arr, name = decode(key, blob, expect=("int32", (3, 2), 24))  # a record that disagrees changes nothing
    assert (name, arr.shape) == ("float32", (2, 3))
    spaced = _forged({"dtype": "float32", "shape": [2, 3], "nbytes": 24}, bytes(24))  # not canonical: parsed
    assert decode(digest(spaced), spaced, expect=("float32", (2, 3), 24))[0].shape == (2, 3)
    short = _forged({"dtype": "float32", "shape": [2, 3], "nbytes": 24}, bytes(20))
    with pytest.raises(PayloadError, match="length"):
        decode(digest(short), short, expect=("float32", (2, 3), 24))


def test_every_way_into_a_payload_gives_the_same_bytes():
    """The short way for CPU torch tensors and the general one agree byte for byte, whatever the layout."""
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    as_numpy = encode(base.numpy().copy())
    for tensor in (base, base.clone().requires_grad_(True), base.t().contiguous().t(), torch.nn.Parameter(base)):
        key, blob, ref = encode(tensor)
        assert (key, blob) == as_numpy[:2] and ref["kind"] == "torch" and ref["shape"] == [4, 6]
    transposed = base.t()  # not contiguous: copied into row order, never stored as its raw memory
    key, blob, _ = encode(transposed)
    assert np.array_equal(decode(key, blob)[0], base.numpy().T)
    assert encode(torch.zeros([1] * 8))[2]["shape"] == [1] * 8
    with pytest.raises(ValueError, match="9 dimensions"):
        encode(torch.zeros([1] * 9))
    with pytest.raises(TypeError, match="unsupported dtype 'complex128'"):
        encode(torch.zeros(2, dtype=torch.complex128))


def test_objects_that_are_not_tensors_are_named():
    class Unhashable:
        dtype = [1]  # a dtype attribute that cannot be a dict key

    for thing in (Unhashable(), [1.0, 2.0], "abc"):
        with pytest.raises(TypeError, match=type(thing).__name__):
            encode(thing)
