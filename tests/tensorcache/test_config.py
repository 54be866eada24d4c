"""CacheConfig: the dict and URL forms round-trip, bad values are named, TensorCache(config) builds the cache
described, keyword settings are the same fields with the same defaults, policy_kwargs is a deprecated alias,
the config does not import the cache, and every policy's declared options are exactly its constructor's
keywords."""
import inspect
import json
import subprocess
import sys

import numpy as np
import pytest

from tensorcache import TensorCache
from tensorcache.config import CacheConfig, policy_options
from tensorcache.policies import LRU, POLICIES


def test_dict_form_round_trips_through_json():
    config = CacheConfig(memory="1GB", disk="/tmp/x.lmdb", policy="evolution-aware",
                         policy_options={"window": 40, "refresh": 2}, namespace="ns", pinned=True)
    assert CacheConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


def test_url_form_reads_fields_and_declared_policy_options():
    config = CacheConfig.from_url("tensorcache://?memory=512MB&disk=none&redis=redis%3A%2F%2Fh%3A6379%2F0"
                                  "&policy=donor-window&window=50&size_aware=true&verify_memory=1")
    assert config == CacheConfig(memory="512MB", disk="none", redis="redis://h:6379/0", policy="donor-window",
                                 policy_options={"window": 50, "size_aware": True}, verify_memory=True)
    assert config.disk_path is None


@pytest.mark.parametrize("url, message", [
    ("redis://?memory=1GB", "expected tensorcache://"),
    ("tensorcache://?memory=1GB&memory=2GB", "'memory' given twice"),
    ("tensorcache://?policy=lru&window=5", r"policy 'lru' takes no option\(s\) \['window'\]; it declares none"),
    ("tensorcache://?memory=lots", "bad memory size: 'lots'"),
    ("tensorcache://?pinned=maybe", "pinned must be true or false, got 'maybe'"),
    ("tensorcache://?policy=donor-window&window=0", "window must be an int >= 1"),
])
def test_bad_urls_name_the_bad_value(url, message):
    with pytest.raises(ValueError, match=message):
        CacheConfig.from_url(url)


def test_bad_dicts_name_the_bad_key_or_value():
    with pytest.raises(ValueError, match=r"unknown cache setting\(s\) \['capacity'\]"):
        CacheConfig.from_dict({"capacity": "1GB"})
    with pytest.raises(ValueError, match="unknown policy 'mru'"):
        CacheConfig(policy="mru")
    with pytest.raises(ValueError, match="namespace"):
        CacheConfig(namespace="")


def test_scaled_multiplies_every_capacity_and_shared_only_drops_the_local_tiers():
    config = CacheConfig(memory="64MB", disk="d", disk_capacity=640, device_memory="0").scaled(1 / 64)
    assert (config.memory, config.disk_capacity, config.device_memory) == (1_000_000, 10, 0)
    assert config.shared_only().memory == 0
    with pytest.raises(ValueError, match="shared tiers"):
        CacheConfig(disk="none").shared_only()


def test_a_cache_opens_the_configured_tiers_and_policy(tmp_path):
    config = CacheConfig(memory="1MB", disk=str(tmp_path / "c.lmdb"), policy="lru", namespace="cfg")
    with TensorCache(config) as cache:
        cache.put("m", [1, 2], [{"w": np.arange(4, dtype=np.float32)}, {"w": np.ones(2, np.float32)}])
        assert list(cache.stats()["tiers"]) == ["memory", "lmdb"] and cache.config is config
        assert cache.lookup([1, 2]).donor == "m"
    with TensorCache(memory=0, disk=tmp_path / "c.lmdb", namespace="cfg") as reader:
        assert reader.lookup([1, 2]).donor == "m"  # the same namespace finds the model through the disk tier
        assert reader.config == CacheConfig(memory=0, disk=tmp_path / "c.lmdb", namespace="cfg")


def test_keyword_settings_are_the_configs_fields_with_its_defaults():
    cache = TensorCache()
    assert cache.config == CacheConfig() and cache.stats()["tiers"]["memory"]["capacity"] == 2 * 10**9
    with pytest.raises(TypeError, match="memry"):
        TensorCache(memry="1MB")
    with pytest.raises(TypeError, match="CacheConfig or settings"):
        TensorCache(CacheConfig(), memory="1MB")
    with pytest.raises(ValueError, match="bad memory size"):
        TensorCache(memory="lots")


def test_policy_kwargs_is_read_as_policy_options_with_a_deprecation_warning():
    with pytest.warns(DeprecationWarning, match="use policy_options"):
        cache = TensorCache(memory="1MB", policy="donor-window", policy_kwargs={"window": 7})
    assert cache.config.policy_options == {"window": 7}
    with pytest.warns(DeprecationWarning), pytest.raises(ValueError, match="not both"):
        CacheConfig.from_dict({"policy_kwargs": {"window": 7}, "policy_options": {"window": 8}})


def test_a_policy_class_or_instance_is_a_config_value():
    assert isinstance(CacheConfig(policy=LRU).policy, type)
    cache = TensorCache(memory="1MB", policy=LRU())
    assert cache.stats()["tiers"]["memory"]["entries"] == 0
    with pytest.raises(ValueError, match="already built"):
        CacheConfig(policy=LRU(), policy_options={"x": 1})


def test_the_config_does_not_import_the_cache():
    code = "import sys, tensorcache.config; sys.exit('tensorcache.cache' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_each_policy_declares_exactly_its_constructor_keywords(name):
    params = [p for p in inspect.signature(POLICIES[name].__init__).parameters if p != "self"]
    assert list(policy_options(name)) == params
    if name == "belady":  # an offline bound: it needs the trace's future, so no config can build it bare
        with pytest.raises(ValueError, match="next_uses"):
            CacheConfig(policy=name)
    else:
        assert CacheConfig(policy=name).takes("window") == ("window" in params)
