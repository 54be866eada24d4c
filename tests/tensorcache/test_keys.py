import xxhash
from hypothesis import given, strategies as st

from tensorcache.keys import blob_digest, digest, layer_key, layer_suffix, positions_key, prefix_keys

archs = st.lists(st.integers(0, 9), min_size=1, max_size=12)


@given(archs, archs)
def test_prefix_keys_agree_exactly_on_shared_prefixes(a, b):
    ka, kb = prefix_keys("s", a), prefix_keys("s", b)
    shared = 0
    while shared < min(len(a), len(b)) and a[shared] == b[shared]:
        shared += 1
    for k in range(min(len(ka), len(kb))):
        assert (ka[k] == kb[k]) == (k <= shared)


def test_prefix_keys_are_128_bit_one_per_prefix_and_namespaced():
    keys = prefix_keys("space", [1, 2, 3])
    assert len(keys) == 4 and all(len(k) == 16 for k in keys)
    assert prefix_keys("other", [1, 2, 3])[2] != keys[2]
    assert len(set(keys)) == 4


def test_positions_key_depends_only_on_the_named_positions():
    assert positions_key("s", [1, 2, 3], [1]) == positions_key("s", [9, 2, 9], [1])
    assert positions_key("s", [1, 2, 3], [1]) != positions_key("s", [1, 3, 3], [1])
    assert positions_key("s", [1, 2, 3], [0, 2]) == positions_key("s", [1, 7, 3], [2, 0])


def test_layer_key_separates_names_and_digest_is_xxh3_128():
    ctx = prefix_keys("s", [0])[1]
    assert layer_key(ctx, layer_suffix("conv")) != layer_key(ctx, layer_suffix("bn"))
    assert digest(b"ab", b"c") == xxhash.xxh3_128_digest(b"abc")


def test_blob_digest_is_digest_of_one_part():
    blob = b"tensorcache" * 100
    assert blob_digest(blob) == digest(blob) == digest(blob[:7], blob[7:]) and blob_digest(memoryview(blob)) == digest(blob)
