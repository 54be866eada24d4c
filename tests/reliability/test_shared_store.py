"""A shared store written by someone else's code: nothing read from it is ever unpickled or executed, and
searches sharing one Redis server under different namespaces never see each other's models."""
from __future__ import annotations

import ast
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import redis

import tensorcache
from tensorcache import TensorCache
from tensorcache.payload import encode

PACKAGE = Path(tensorcache.__file__).parent
UNSAFE_MODULES = {"pickle", "_pickle", "cPickle", "marshal", "shelve", "dill", "cloudpickle", "joblib", "copyreg"}


def unsafe_calls(source: str) -> list[str]:
    """Imports of deserialisers that run code, and calls that load or run code, found in ``source``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
            found += [f"import {n}" for n in names if n.split(".")[0] in UNSAFE_MODULES]
        elif isinstance(node, ast.Call):
            func = node.func
            name = ast.unparse(func)
            if name in ("eval", "exec", "__import__") or name.endswith(("torch.load", "pickle.loads", "pickle.load")):
                found.append(f"call {name}")
            elif isinstance(func, ast.Attribute) and func.attr == "load" and name.split(".")[0] in ("np", "numpy"):
                allow = [k for k in node.keywords if k.arg == "allow_pickle"]
                if allow and not (isinstance(allow[0].value, ast.Constant) and allow[0].value.value is False):
                    found.append(f"call {name}(allow_pickle=...)")
    return found


@pytest.mark.parametrize("snippet, expected", [
    ("import pickle", ["import pickle"]), ("from marshal import loads", ["import marshal"]),
    ("import torch\ntorch.load(f)", ["call torch.load"]), ("np.load(f, allow_pickle=True)", ["call np.load(allow_pickle=...)"]),
    ("np.load(f)", []), ("np.load(f, allow_pickle=False)", []), ("eval(text)", ["call eval"]),
])
def test_the_unsafe_call_finder_finds_what_it_must(snippet, expected):
    assert unsafe_calls(snippet) == expected


def test_no_tensorcache_module_can_unpickle_or_run_code():
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 10
    offences = {str(f.relative_to(PACKAGE)): found for f in files if (found := unsafe_calls(f.read_text()))}
    assert offences == {}


class _Exploit:
    """Unpickling this creates ``marker``: proof that code ran."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (self.marker,)


def test_a_pickle_planted_in_the_store_is_a_miss_and_never_runs(store, planter, tmp_path, layers_of, genuine):
    marker = tmp_path / "pwned"
    exploit = pickle.dumps(_Exploit(str(marker)))
    writer = TensorCache(memory=0, **store.settings)
    writer.put("m1", (1, 2), layers_of(1, 2))
    writer.close()
    store.set(encode(layers_of(1, 2)[1]["w1"])[0], exploit)  # as a payload
    planter(store, "exploit", exploit)  # and as a model record
    reader = TensorCache(memory="1MB", **store.settings)
    hit = reader.lookup((1, 2))
    assert hit.prefix_len == 1
    genuine(hit, {"m1": (1, 2)}, (1, 2))
    assert reader.stats()["corrupt"] == 2  # the payload and the model record
    assert not marker.exists(), "a planted pickle was executed"
    reader.close()


def test_two_searches_on_one_redis_never_see_each_other(redis_url, redis_namespace):
    names = [f"{redis_namespace}-a", f"{redis_namespace}-b"]

    def layers(value: float) -> list[dict[str, np.ndarray]]:
        return [{f"w{i}": np.full(8, value + i, np.float32)} for i in range(3)]

    caches = [TensorCache(memory="1MB", redis=redis_url, namespace=n, redis_required=True) for n in names]
    for k, cache in enumerate(caches):  # the same model id and architecture, different tensors
        cache.put("m1", (1, 2, 3), layers(100.0 * (k + 1)), score=0.5)
    for k, name in enumerate(names):
        fresh = TensorCache(memory="1MB", redis=redis_url, namespace=name, redis_required=True)
        hit = fresh.lookup((1, 2, 3))
        assert hit.slowest_tier == "redis" and fresh.stats()["models"] == 1
        assert [float(layer[f"w{i}"][0]) for i, layer in enumerate(hit.layers)] == [100.0 * (k + 1) + i
                                                                                     for i in range(3)]
        fresh.close()
    outsider = TensorCache(memory="1MB", redis=redis_url, namespace=f"{redis_namespace}-c", redis_required=True)
    assert outsider.lookup((1, 2, 3)) is None and outsider.stats()["models"] == 0
    with redis.Redis.from_url(redis_url) as raw:
        keys = list(raw.scan_iter(match=f"tc:{redis_namespace}*"))
    assert keys and all(k.startswith((f"tc:{names[0]}:".encode(), f"tc:{names[1]}:".encode())) for k in keys)
    for cache in [*caches, outsider]:
        cache.close()
