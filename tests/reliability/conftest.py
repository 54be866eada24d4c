"""Fault-matrix helpers: tensors that name their model and layer, a check that a hit serves exactly them,
a runner for scripts that must run in another process, and raw write access to the shared stores."""
from __future__ import annotations

import hashlib
import inspect
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import lmdb
import numpy as np
import pytest
import redis

from tensorcache.keys import namespace_key
from tensorcache.tiers import LMDBTier, RedisTier


def make_layers(model: int, n_layers: int, width: int = 16) -> list[dict[str, np.ndarray]]:
    """One ``{"w<i>": tensor}`` per layer; every value is ``model * 1000 + i`` so a served tensor names its origin."""
    return [{f"w{i}": np.full(width, model * 1000 + i, dtype=np.float32)} for i in range(n_layers)]


def check_hit(hit: Any, archs: Mapping[str, Sequence[int]], child: Sequence[int]) -> None:
    """Assert ``hit`` serves one donor's own layers (model id ``m<k>``, built by ``make_layers``) whose
    architecture really shares the served prefix with ``child``."""
    donor_arch = archs[hit.donor]
    model = int(hit.donor[1:])
    assert list(donor_arch[: hit.prefix_len]) == list(child[: hit.prefix_len]), (hit.donor, donor_arch, child)
    assert hit.indices == list(range(hit.prefix_len))
    for i, layer in zip(hit.indices, hit.layers, strict=True):
        assert list(layer) == [f"w{i}"]
        assert np.all(layer[f"w{i}"] == model * 1000 + i), f"layer {i} served for {hit.donor} is not its own"


@pytest.fixture
def layers_of() -> Callable[..., list[dict[str, np.ndarray]]]:
    return make_layers


@pytest.fixture
def genuine() -> Callable[..., None]:
    return check_hit


def script(code: str) -> str:
    """``code`` for another interpreter, with ``np``, ``make_layers`` and ``check_hit`` defined first."""
    helpers = "".join(inspect.getsource(f) + "\n" for f in (make_layers, check_hit))
    return f"from __future__ import annotations\nimport numpy as np\n{helpers}{code}"


def run_python(code: str, *args: str, timeout: float = 120, env: Mapping[str, str] | None = None
               ) -> subprocess.CompletedProcess:
    """Run ``script(code)`` in a fresh interpreter; fail the test with its output if it does not exit 0."""
    done = subprocess.run([sys.executable, "-c", script(code), *args], capture_output=True, text=True,
                          timeout=timeout, env=None if env is None else dict(env))
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done


@pytest.fixture
def python_script() -> Callable[[str], str]:
    return script


@pytest.fixture
def python() -> Callable[..., subprocess.CompletedProcess]:
    return run_python


class LMDBStore:
    """The cache's LMDB file, written with plain lmdb as a faulty disk or another program would (use it only
    while no TensorCache in this process has the file open: LMDB allows one environment per file and process)."""

    def __init__(self, path: Path) -> None:
        self.path, self.namespace = path, "default"
        self.settings: dict[str, Any] = {"disk": path}
        self.payloads = namespace_key(self.namespace) + b"b"  # a payload's key is this + its digest

    def get(self, key: bytes) -> bytes | None:
        with lmdb.open(str(self.path)) as env, env.begin() as txn:
            return txn.get(self.payloads + key)

    def set(self, key: bytes, value: bytes) -> None:
        with lmdb.open(str(self.path)) as env, env.begin(write=True) as txn:
            txn.put(self.payloads + key, value)

    def in_use(self) -> int:
        """Bytes of the data file that LMDB's pages span (the file may be longer: a writable map is sparse)."""
        with lmdb.open(str(self.path), readonly=True, lock=False) as env:
            return (env.info()["last_pgno"] + 1) * env.stat()["psize"]

    def tier(self) -> LMDBTier:
        return LMDBTier(self.path, capacity=1 << 30, namespace=self.namespace)


class RedisStore:
    """The cache's keys in Redis, written with a plain client."""

    def __init__(self, url: str, namespace: str) -> None:
        self.client, self.namespace, self.url = redis.Redis.from_url(url), namespace, url
        self.prefix = f"tc:{namespace}:".encode()
        self.settings = {"redis": url, "namespace": namespace}

    def get(self, key: bytes) -> bytes | None:
        return self.client.get(self.prefix + b"v:" + key)

    def set(self, key: bytes, value: bytes) -> None:
        self.client.set(self.prefix + b"v:" + key, value)

    def tier(self) -> RedisTier:
        return RedisTier(self.url, capacity=1 << 30, namespace=self.namespace)


def plant(store: LMDBStore | RedisStore, model_id: str, record: bytes, held: Sequence[int] = (0,),
          payload: bytes = b"planted bytes") -> None:
    """Make the store hold entries of ``model_id`` described by an arbitrary ``record``, as a hostile writer
    that follows the books' protocol would (so audits find nothing to repair: only the record is bad)."""
    digest = hashlib.blake2b(payload, digest_size=16).digest()
    tier = store.tier()
    for index in held:
        assert tier.hold(record, model_id, index, [digest], {digest: payload}).held
    tier.close()


@pytest.fixture
def lmdb_store(tmp_path: Path) -> LMDBStore:
    return LMDBStore(tmp_path / "cache.lmdb")


@pytest.fixture
def planter() -> Callable[..., None]:
    return plant


@pytest.fixture(params=["lmdb", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LMDBStore | RedisStore]:
    """The widest tier of a cache (where payloads and the catalog log live), open to raw writes."""
    if request.param == "lmdb":
        yield LMDBStore(tmp_path / "cache.lmdb")
        return
    store = RedisStore(request.getfixturevalue("redis_url"), request.getfixturevalue("redis_namespace"))
    yield store
    store.client.close()
