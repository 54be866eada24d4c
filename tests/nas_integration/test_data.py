"""Dataset loaders: MNIST IDX, CIFAR-10 JPEG tar.gz (real data) and binary release (written here)."""
from __future__ import annotations

import gzip
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest

from nas_integration.data import CIFAR_BATCHES, load_cifar10, load_dataset, load_mnist, read_idx

DATA = Path(os.environ.get("TENSORCACHE_TEST_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"))
RECORD = 1 + 32 * 32 * 3


def needs(sub: str) -> pytest.MarkDecorator:
    return pytest.mark.skipif(not (DATA / sub).is_dir(), reason=f"{DATA / sub} not present")


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
