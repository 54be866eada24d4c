"""SearchSettings embeds a CacheConfig as is and fills in only the search's own defaults."""
import pytest

from nas_integration.cli import build_parser, settings_from_args
from nas_integration.search import SearchSettings
from tensorcache.config import CacheConfig


def resolved(tmp_path, **kw):
    return SearchSettings(out=str(tmp_path), evaluator="tabular", population=10, sample=3, **kw).resolved()


def test_defaults_fill_disk_namespace_and_a_declared_window(tmp_path):
    s = resolved(tmp_path)
    assert s.cache_config.disk == str(tmp_path / "cache.lmdb")
    assert s.cache_config.namespace == "nb201-tabular-cifar10"
    assert s.cache_config.policy_options == {"window": 40}  # 4 x population
    assert s.resolved() == s


def test_a_given_config_is_kept(tmp_path):
    config = CacheConfig(memory="1GB", disk="none", namespace="mine", policy="donor-window",
                         policy_options={"window": 7})
    s = resolved(tmp_path, cache_config=config)
    assert (s.cache_config.memory, s.cache_config.disk_path, s.cache_config.namespace) == ("1GB", None, "mine")
    assert s.cache_config.policy_options == {"window": 7}
    assert resolved(tmp_path, cache_config=CacheConfig(policy="lru")).cache_config.policy_options == {}


def test_worker_caches_are_scaled_and_absent_without_a_cache(tmp_path):
    s = resolved(tmp_path, cache_config=CacheConfig(memory="64MB"))
    assert s.worker_cache_config(1 / 64).memory == 1_000_000
    assert resolved(tmp_path, cache=False).worker_cache_config(1 / 64) is None


def test_cli_flags_become_the_cache_config(tmp_path):
    args = build_parser().parse_args(["--out", str(tmp_path), "--memory", "1GB", "--disk", "none", "--redis",
                                      "redis://h:1/0", "--policy", "evolution-aware", "--window", "12"])
    config = settings_from_args(args).cache_config
    assert (config.memory, config.disk, config.redis, config.policy) == ("1GB", "none", "redis://h:1/0",
                                                                        "evolution-aware")
    assert config.policy_options == {"window": 12}
    lru = settings_from_args(build_parser().parse_args(["--out", str(tmp_path), "--policy", "lru", "--window", "5"]))
    assert lru.cache_config.policy_options == {}  # lru declares no window: the flag does not apply to it


def test_a_bad_cache_value_is_named(tmp_path):
    with pytest.raises(ValueError, match="bad memory size: 'lots'"):
        settings_from_args(build_parser().parse_args(["--out", str(tmp_path), "--memory", "lots"]))
    with pytest.raises(ValueError, match="cache_config must be a CacheConfig"):
        resolved(tmp_path, cache_config={"memory": "1GB"})


def test_children_in_flight_are_described_by_default_only_where_the_cache_is_in_process(tmp_path):
    assert resolved(tmp_path).inflight is True  # serial executor: the search holds the cache
    assert resolved(tmp_path, executor="process", workers=2).inflight is False
    assert resolved(tmp_path, inflight=False).inflight is False
    assert resolved(tmp_path, executor="process", workers=2, inflight=True).inflight is True  # told with each job
    args = build_parser().parse_args(["--out", str(tmp_path), "--no-inflight"])
    assert settings_from_args(args).inflight is False

