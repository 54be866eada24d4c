"""Input without a bound is refused while it is read, and every bad setting is a ValueError naming it."""
from __future__ import annotations

import itertools
import json
import re
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest

from tensorcache import CacheConfig, TensorCache
from tensorcache import cli as tensorcache_cli
from tensorcache import trace
from tensorcache.catalog import MAX_LAYERS
from tensorcache.tiers import LMDBTier, RedisTier


def _endless() -> Iterator[int]:
    """itertools.count() that fails the test if read much past the longest architecture there may be."""
    for n in itertools.count():
        if n > MAX_LAYERS + 1:
            raise AssertionError("the architecture was read past its limit")
        yield 0


def test_an_endless_architecture_is_refused_while_it_is_read(layers_of) -> None:
    with TensorCache(memory="1MB") as cache:
        for call in (lambda: cache.lookup(_endless()), lambda: cache.best_donor(_endless()),
                     lambda: cache.put("m1", _endless(), layers_of(1, 1))):
            with pytest.raises(ValueError, match=f"more than {MAX_LAYERS} positions"):
                call()


def test_a_trace_line_over_the_limit_is_never_read_whole(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(trace, "MAX_LINE", 2**20)
    path = tmp_path / "trace.jsonl"
    with open(path, "w") as f:
        f.write('{"model_id": "' + "x" * (24 * 2**20) + '"}\n')
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=r"trace.jsonl:1: a line longer than 1048576 characters"):
            trace.read_records(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * 2**20, f"reading a 24 MB line took {peak / 2**20:.0f} MiB"


@pytest.mark.parametrize("command", ["analyze", "replay"])
def test_deeply_nested_trace_json_is_a_clear_error_in_analyze_and_replay(tmp_path: Path, capsys, command) -> None:
    path = tmp_path / "trace.jsonl"
    path.write_text("[" * 200_000 + "]" * 200_000 + "\n")
    args = [command, str(path), *(["--out", str(tmp_path / "out")] if command == "analyze" else [])]
    assert tensorcache_cli.main(args) == 2
    err = capsys.readouterr().err
    assert "trace.jsonl:1: a trace record nested too deeply to read" in err and "Traceback" not in err


def test_replay_of_a_trace_without_children_prints_valid_json(tmp_path: Path, capsys) -> None:
    path = tmp_path / "trace.jsonl"
    path.write_text(json.dumps({
        "model_id": "m0", "parent_id": None, "donor_id": None, "worker": 0, "t_start": 0.0, "t_end": 1.0,
        "arch": [0], "mutation_pos": None, "score": 0.5, "layers_served": 0, "bytes_served": 0, "tier": None,
        "cache_s": 0.0, "train_s": 1.0, "layer_bytes": [4], "layer_keys": ["00" * 16]}) + "\n")
    assert tensorcache_cli.main(["replay", str(path), "--json"]) == 0

    def no_constants(name: str) -> None:
        raise AssertionError(f"{name} is not JSON")

    metrics = json.loads(capsys.readouterr().out, parse_constant=no_constants)
    assert metrics["lookups"] == 1 and metrics["transfer_yield"] is None


@pytest.mark.parametrize("query, named", [
    ("memory=inf", "bad memory size: 'inf'"),
    ("memory=nan", "bad memory size: 'nan'"),
    ("memory=" + "9" * 5000, "bad memory size: '99999"),
    ("disk_capacity=" + "1" * 40 + "GB&disk=x", "bad disk capacity: '1111"),
    ("memory=99999999999TB", "bad memory size: '99999999999TB' is more than 2^63 - 1 bytes"),
    ("policy_options=x", "policy_options is not a URL setting"),
    ("disk=cache.lmdb&disk_capacity=0", "bad disk capacity: '0' is 0 bytes"),
    ("redis=redis://127.0.0.1:1/0&redis_capacity=0KB", "bad redis capacity: '0KB' is 0 bytes"),
    ("namespace=a:b", "namespace must be at most 256 UTF-8 bytes without ':'"),
], ids=lambda v: str(v)[:24])
def test_bad_url_settings_are_value_errors_naming_the_setting(query: str, named: str) -> None:
    with pytest.raises(ValueError, match=re.escape(named)):
        CacheConfig.from_url(f"tensorcache://?{query}")


@pytest.mark.parametrize("kwargs, named", [
    ({"memory": float("nan")}, "bad memory size: nan is not a finite number"),
    ({"memory": float("inf")}, "bad memory size: inf is not a finite number"),
    ({"memory": 2**70}, "bad memory size: '1180591620717411303424' is more than 2^63 - 1 bytes"),
    ({"disk_capacity": 0}, "bad disk capacity: 0 is 0 bytes"),
    ({"namespace": "nb201\ud800"}, "namespace 'nb201\\ud800' is not valid UTF-8 text"),
    ({"namespace": "a:b"}, "namespace must be at most 256 UTF-8 bytes without ':'"),
], ids=lambda v: str(v)[:24])
def test_bad_cache_arguments_are_named_before_any_file_is_made(tmp_path: Path, kwargs, named) -> None:
    disk = tmp_path / "cache.lmdb"
    with pytest.raises(ValueError, match=re.escape(named)):
        TensorCache(**{"memory": "1MB", "disk": disk, **kwargs})
    with pytest.raises(ValueError, match=re.escape(named)):
        CacheConfig(**{"disk": str(disk), **kwargs})
    assert not disk.exists()


@pytest.mark.parametrize("namespace", ["a:b", "lone\udfff"])
def test_a_namespace_is_refused_alike_on_lmdb_and_redis(tmp_path: Path, redis_url: str, namespace: str) -> None:
    errors = []
    for make in (lambda: LMDBTier(tmp_path / "c.lmdb", 1 << 20, namespace=namespace),
                 lambda: RedisTier(redis_url, 1 << 20, namespace=namespace),
                 lambda: TensorCache(memory=0, disk=tmp_path / "c.lmdb", namespace=namespace),
                 lambda: TensorCache(memory=0, redis=redis_url, namespace=namespace)):
        with pytest.raises(ValueError) as info:
            make()
        errors.append(str(info.value))
    assert len(set(errors)) == 1 and repr(namespace) in errors[0]
    assert not (tmp_path / "c.lmdb").exists()
