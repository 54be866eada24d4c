import pytest

from tensorcache.sizes import format_size, parse_size


@pytest.mark.parametrize("text,expected", [("2GB", 2 * 10**9), ("512MiB", 512 * 2**20), ("1.5 GB", 1_500_000_000),
                                           ("100", 100), (4096, 4096), (None, 0), ("3k", 3072)])
def test_parse_size(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("bad", ["2GiBx", "GB", "-1GB", "1..5MB", -5, True, "12 parsecs"])
def test_bad_sizes_name_the_value(bad):
    with pytest.raises(ValueError, match="memory"):
        parse_size(bad, what="memory")


def test_format_size():
    assert format_size(1_500_000) == "1.5 MB"
    assert format_size(12) == "12 B"
