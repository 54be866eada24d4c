import numpy as np
import pytest
import torch

from tensorcache.payload import PayloadError, encode
from tensorcache.tiers import DeviceTier, Tier

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.int64, torch.bool, torch.uint8,
                                   torch.complex64])
def test_payload_round_trip_and_a_typed_view_without_copies(dtype):
    source = (torch.randn(3, 5) * 10).to(dtype)
    key, blob, _ = encode(source)
    tier = DeviceTier(1 << 20, device="cpu")
    assert isinstance(tier, Tier) and tier.name == "device" and not tier.shares_books and tier.device_views
    assert tier.put(key, blob)
    assert tier.get(key) == bytes(blob)  # the host copy is the whole payload, header included
    first, name = tier.view(key)
    second, _ = tier.view(key)
    assert name == str(dtype).removeprefix("torch.") and first.dtype == dtype and first.shape == (3, 5)
    assert torch.equal(first, source)
    assert first.data_ptr() == second.data_ptr() and first.data_ptr() % 64 == 0  # the tier's own aligned bytes
    assert tier.used_bytes() == len(blob)


def test_scalars_and_empty_tensors_keep_their_shape():
    tier = DeviceTier(1 << 10, device="cpu")
    for tensor in (torch.tensor(7, dtype=torch.int64), torch.empty(0, 3)):
        key, blob, _ = encode(tensor)
        assert tier.put(key, blob)
        view, _ = tier.view(key)
        assert view.shape == tensor.shape and torch.equal(view, tensor)


def test_other_values_are_stored_whole_but_have_no_view():
    tier = DeviceTier(100, device="cpu")
    assert tier.put(b"a", b"1234") and tier.put(b"b", b"")
    assert tier.put(b"a", b"other value")  # present already: kept, not counted twice
    assert tier.get(b"a") == b"1234" and tier.get(b"b") == b"" and tier.used_bytes() == 4
    with pytest.raises(PayloadError, match="not a tensorcache payload"):
        tier.view(b"a")
    assert b"a" in tier and b"c" not in tier and tier.get(b"c") is None and tier.view(b"c") is None
    tier.delete(b"a")
    tier.delete(b"never stored")
    assert tier.get(b"a") is None and tier.used_bytes() == 0


def test_source_buffer_is_copied_in():
    key, blob, _ = encode(np.arange(4, dtype=np.float32))
    blob = bytearray(blob)
    tier = DeviceTier(1 << 10, device="cpu")
    tier.put(key, blob)
    blob[-4:] = b"\0\0\0\0"
    assert tier.view(key)[0].tolist() == [0.0, 1.0, 2.0, 3.0]


def test_close_and_bad_arguments():
    tier = DeviceTier(1 << 10, device="cpu")
    tier.put(b"k", b"v")
    tier.close()
    assert tier.get(b"k") is None and tier.used_bytes() == 0
    with pytest.raises(ValueError, match="1..494"):
        tier.put(b"", b"x")
    with pytest.raises(ValueError, match="-1"):
        DeviceTier(-1, device="cpu")
    with pytest.raises(ValueError, match="'no-such-device'"):
        DeviceTier(10, device="no-such-device")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error when CUDA is absent")
def test_cuda_without_a_gpu_is_refused_at_once():
    with pytest.raises(ValueError, match="cannot use device 'cuda'"):
        DeviceTier(10, device="cuda")


@needs_cuda
def test_values_live_in_gpu_memory():
    key, blob, _ = encode(torch.arange(10, dtype=torch.float32))
    tier = DeviceTier(1 << 20, device="cuda")
    tier.put(key, blob)
    view, _ = tier.view(key)
    assert view.is_cuda and view.data_ptr() % 64 == 0
    assert torch.equal(view.cpu(), torch.arange(10, dtype=torch.float32))
    assert tier.get(key) == bytes(blob)
