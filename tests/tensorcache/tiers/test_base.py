"""The tier contract: what a tier can do is said by its capability flags, the one way the cache asks; a
method that belongs to a flag raises NotImplementedError on a tier without it, and the stack follows the
flags, not the tier's class."""
from __future__ import annotations

import numpy as np
import pytest

from tensorcache.catalog import Catalog, LayerRecord, ModelRecord, TensorRef
from tensorcache.payload import encode
from tensorcache.policies import FIFO
from tensorcache.stack import Moves, TierStack
from tensorcache.tiers import DeviceTier, LMDBTier, MemoryTier, Tier
from tensorcache.tiers.books import Position

FLAGGED = {"shares_books": [("snapshot", ()), ("changes", (Position(b"", 0), None)), ("record", ("m",))],
           "device_views": [("view", (b"k",))]}


def _tiers(tmp_path) -> list[Tier]:
    return [MemoryTier(1 << 20), LMDBTier(tmp_path / "d", 1 << 20), DeviceTier(1 << 20, device="cpu")]


def test_a_method_of_a_capability_the_tier_lacks_raises_and_one_it_has_answers(tmp_path):
    for tier in _tiers(tmp_path):
        for flag, calls in FLAGGED.items():
            for method, args in calls:
                if getattr(tier, flag):
                    getattr(tier, method)(*args)   # answers (a miss or an empty log here)
                else:
                    with pytest.raises(NotImplementedError, match=tier.name):
                        getattr(tier, method)(*args)
        tier.close()


def test_built_in_tiers_declare_what_they_do():
    assert [(t.shares_books, t.trusted_bytes, t.keeps_decoded, t.device_views)
            for t in (MemoryTier, LMDBTier, DeviceTier)] == [(False, True, True, False), (True, False, False, False),
                                                             (False, True, True, True)]


class _Flipping(MemoryTier):
    """A memory tier whose reads come back with the last byte flipped; it keeps no decoded layers."""

    keeps_decoded = False

    def read(self, wanted):
        out = []
        for value in super().read(wanted):
            value = bytearray(value)
            value[-1] ^= 0xFF
            out.append(value)
        return out


class _FlippingUntrusted(_Flipping):
    """The same tier, saying its bytes may change under this process."""

    trusted_bytes = False


def test_the_stack_follows_the_flags_not_the_class():
    digest, blob, ref = encode(np.arange(8, dtype=np.float32))
    tensor = TensorRef(digest, ref["dtype"], tuple(ref["shape"]), ref["nbytes"], ref["kind"])
    record = ModelRecord("m", (0,), 1.0, None, (LayerRecord(b"\x01" * 16, {"w": tensor}, (0,)),))
    assert TierStack([MemoryTier(1 << 20)], [FIFO()], Catalog(), "me").slots[0].decoded is not None
    found = {}
    for kind in (_Flipping, _FlippingUntrusted):
        stack = TierStack([kind(1 << 20)], [FIFO()], Catalog(), "me")
        assert stack.slots[0].decoded is None   # keeps_decoded = False
        assert stack.admit(0, record, (0,), {digest: blob}, Moves())
        moves = Moves()
        found[kind] = (stack.read(record, 0, moves) is not None, moves.corrupt)
    assert found == {_Flipping: (True, 0), _FlippingUntrusted: (False, 1)}   # only untrusted bytes are checked
