"""Datasets for searches: the small set shipped with the package, and full sets found or fetched on demand.

``mnist-small`` (7,000 MNIST images) and the NAS-Bench-201 table ship in ``nas_integration/datasets/``.
``mnist``, ``fashion-mnist`` and ``cifar10`` are read from a folder the user names, else
``$TENSORCACHE_DATA/<name>``, else the per-user cache folder, and downloaded there when absent.
Every loader returns ``(x_train, y_train, x_test, y_test)``: uint8 images (N, H, W) or (N, H, W, 3) and
int64 labels. CIFAR-10 is decoded once and cached as .npy files in a cache directory, keyed by the
source's path, size and modification time.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import os
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .download import SOURCES, download

if TYPE_CHECKING:
    import torch

Arrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
FlatData = tuple["torch.Tensor", "torch.Tensor", "torch.Tensor", "torch.Tensor"]
SHIPPED_DIR = Path(__file__).resolve().parent / "datasets"
SHIPPED = {"mnist-small": SHIPPED_DIR / "mnist-small"}
DATASETS = (*SHIPPED, *SOURCES)  # every name load_dataset takes, the shipped ones first
MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
               "t10k-labels-idx1-ubyte")
CIFAR_BATCHES = tuple(f"data_batch_{i}.bin" for i in range(1, 6)) + ("test_batch.bin",)
_CIFAR_RECORD = 1 + 32 * 32 * 3
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
_SPLITS = ("x_train", "y_train", "x_test", "y_test")


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """One IDX file (raw or .gz) of unsigned bytes as an array of its declared shape."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ValueError(f"{path}: not an IDX file of unsigned bytes (header {data[:4].hex()})")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    body = np.frombuffer(data, np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(shape)):
        raise ValueError(f"{path}: header declares shape {shape} but holds {body.size} values")
    return body.reshape(shape)


def load_mnist(path: str | os.PathLike) -> Arrays:
    """MNIST or Fashion-MNIST from a folder holding the four standard IDX files (each raw or .gz)."""
    folder = Path(path).expanduser()
    arrays = []
    for name in MNIST_FILES:
        found = next((folder / n for n in (name, name + ".gz") if (folder / n).is_file()), None)
        if found is None:
            raise FileNotFoundError(f"MNIST data not found in {folder}: expected the files "
                                    f"{', '.join(MNIST_FILES)} (each optionally .gz); {name} is missing")
        arrays.append(read_idx(found))
    x_train, y_train, x_test, y_test = arrays
    return x_train, y_train.astype(np.int64), x_test, y_test.astype(np.int64)


def load_cifar10(path: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> Arrays:
    """CIFAR-10 from the official binary release or a ``{train,test}/<class>/*.jpg`` layout.

    ``path`` may be a folder or a tar.gz of either layout (or a folder holding such a tar.gz). JPEG
    class labels follow the alphabetical order of the class folders, and their images come in a fixed
    shuffled order so that any slice mixes classes. The decoded arrays are cached under ``cache_dir``
    (default ``user_cache_dir()``).
    """
    source, stamps = _find_cifar(Path(path).expanduser())
    digest = hashlib.sha256(repr((str(source.resolve()), stamps)).encode()).hexdigest()[:16]
    folder = Path(cache_dir or user_cache_dir()).expanduser() / f"cifar10-{digest}"
    files = [folder / f"{s}.npy" for s in _SPLITS]
    if all(f.is_file() for f in files):
        return tuple(np.load(f) for f in files)
    members = list(_tar_members(source) if source.is_file() else _folder_members(source))
    binary = any(parts[-1] == CIFAR_BATCHES[0] for parts, _ in members)
    arrays = _decode_binary(members) if binary else _decode_images(members)
    folder.mkdir(parents=True, exist_ok=True)
    for f, array in zip(files, arrays):
        tmp = f.with_name(f"{f.stem}.{os.getpid()}.tmp.npy")
        np.save(tmp, array)
        os.replace(tmp, f)
    return arrays


def user_cache_dir() -> Path:
    """The per-user folder for downloads and decoded arrays: ``$XDG_CACHE_HOME/tensorcache/data``."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "tensorcache" / "data"


def nb201_table() -> Path:
    """The shipped NAS-Bench-201 table (gzip CSV, 15,625 rows) that the tabular evaluator reads by default."""
    return SHIPPED_DIR / "nb201" / "nb201_combined.csv.gz"


def dataset_name(name: str) -> str:
    """The canonical spelling of a dataset name (``Fashion_MNIST`` -> ``fashion-mnist``); ValueError if unknown."""
    key = name.lower().replace("_", "-")
    key = {"cifar-10": "cifar10"}.get(key, key)
    if key not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {', '.join(DATASETS)}")
    return key


def locate(name: str, data_dir: str | os.PathLike | None = None, download_missing: bool = True,
           mirror: str | None = None) -> Path:
    """The folder or file to read dataset ``name`` from, downloading it when it is nowhere yet.

    A shipped set is always its package folder (``data_dir`` must be None). For a full set the search
    order is ``data_dir``, ``$TENSORCACHE_DATA/<name>``, then ``user_cache_dir()/<name>``; a download goes
    to ``data_dir`` when given, else to the cache folder. ``mirror`` replaces the public download URLs.
    """
    key = dataset_name(name)
    if key in SHIPPED:
        if data_dir is not None:
            raise ValueError(f"dataset {key} ships with the package and takes no data directory; the data "
                             f"directory is for {', '.join(SOURCES)}")
        return SHIPPED[key]
    if data_dir is not None:
        candidates = [Path(data_dir).expanduser()]
        if candidates[0].is_file():  # an archive the user named: its reader says what is wrong with it
            return candidates[0]
    else:
        env = os.environ.get("TENSORCACHE_DATA")
        candidates = ([Path(env).expanduser() / key] if env else []) + [user_cache_dir() / key]
    for path in candidates:
        if _holds(key, path):
            return path
    if not download_missing:
        raise FileNotFoundError(f"{key} not found in {', '.join(map(str, candidates))}")
    return download(key, candidates[-1] if data_dir is None else candidates[0], mirror=mirror)


def load_dataset(name: str, data_dir: str | os.PathLike | None = None,
                 subset: int | tuple[int, int] | None = None, cache_dir: str | os.PathLike | None = None,
                 seed: int = 0, download_missing: bool = True, mirror: str | None = None) -> Arrays:
    """Dataset ``name`` (one of ``DATASETS``) as uint8 images and int64 labels, fetched if needed (see ``locate``).

    ``subset=n`` keeps a seeded random n training and n test examples (``(n_train, n_test)`` sets each);
    None keeps everything. ``cache_dir`` holds decoded CIFAR-10 arrays (default ``user_cache_dir()``).
    """
    key = dataset_name(name)
    path = locate(key, data_dir, download_missing, mirror)
    arrays = load_cifar10(path, cache_dir) if key == "cifar10" else load_mnist(path)
    if subset is None:
        return arrays
    n_train, n_test = (subset, subset) if isinstance(subset, int) else subset
    rng = np.random.default_rng(seed)
    x_train, y_train, x_test, y_test = arrays
    train = rng.permutation(len(x_train))[:n_train]
    test = rng.permutation(len(x_test))[:n_test]
    return x_train[train], y_train[train], x_test[test], y_test[test]


def flat_mnist(train: int, val: int) -> FlatData:
    """``train`` training and ``val`` validation images of the shipped mnist-small (a seeded subset) as flat
    torch floats in [0, 1], with their labels: (x, y, x_val, y_val); what small examples train on."""
    import torch

    if train < 1 or val < 1:
        raise ValueError(f"need at least one training and one validation image, got train {train}, val {val}")
    x, y, _, _ = load_dataset("mnist-small", subset=(train + val, 1), download_missing=False)
    if len(x) < train + val:  # the subset stops at the set's size: the validation images would be missing
        raise ValueError(f"train {train} + val {val} images: mnist-small has {len(x)} training images")
    x, y = torch.as_tensor(x).float().div_(255).flatten(1), torch.as_tensor(y).long()
    return x[:train], y[:train], x[train:], y[train:]


def _holds(name: str, path: Path) -> bool:
    """Whether ``path`` (a folder, or a CIFAR-10 archive) holds a readable copy of dataset ``name``."""
    if name == "cifar10":
        try:
            _find_cifar(path)
            return True
        except (FileNotFoundError, ValueError):
            return False
    return all((path / n).is_file() or (path / (n + ".gz")).is_file() for n in MNIST_FILES)


def _find_cifar(path: Path) -> tuple[Path, tuple]:
    """``(source, stamps)``: the folder or archive holding CIFAR-10 and what identifies its contents."""
    def stamp(p: Path) -> tuple:
        st = p.stat()
        return p.name, st.st_size, st.st_mtime_ns

    if path.is_file():
        if not tarfile.is_tarfile(path):
            raise ValueError(f"{path} is not a tar archive of CIFAR-10")
        return path, (stamp(path),)
    if path.is_dir():
        for folder in (path, path / "cifar-10-batches-bin"):
            if all((folder / b).is_file() for b in CIFAR_BATCHES):
                return folder, tuple(stamp(folder / b) for b in CIFAR_BATCHES)
        if (path / "train").is_dir() and (path / "test").is_dir():
            dirs = sorted(d for split in ("train", "test") for d in (path / split).iterdir() if d.is_dir())
            return path, tuple(stamp(d) for d in dirs)
        tars = sorted(p for p in path.iterdir() if p.name.endswith((".tar.gz", ".tgz", ".tar")))
        if tars:
            return _find_cifar(tars[0])
    raise FileNotFoundError(
        f"CIFAR-10 data not found at {path}: expected cifar-10-batches-bin/ with "
        f"{', '.join(CIFAR_BATCHES)}, a folder with train/<class>/*.jpg and test/<class>/*.jpg, "
        f"or a .tar.gz of either")


def _tar_members(path: Path) -> Iterator[tuple[tuple[str, ...], bytes]]:
    """``(path parts, bytes)`` of every regular file in a tar archive, streamed."""
    with tarfile.open(path) as tar:
        for member in tar:
            if member.isfile():
                yield Path(member.name).parts, tar.extractfile(member).read()


def _folder_members(folder: Path) -> Iterator[tuple[tuple[str, ...], bytes]]:
    for f in sorted(folder.rglob("*")):
        if f.is_file():
            yield f.relative_to(folder).parts, f.read_bytes()


def _decode_binary(members: list[tuple[tuple[str, ...], bytes]]) -> Arrays:
    batches = {parts[-1]: data for parts, data in members if parts[-1] in CIFAR_BATCHES}
    missing = [b for b in CIFAR_BATCHES if b not in batches]
    if missing:
        raise FileNotFoundError(f"CIFAR-10 binary release lacks {', '.join(missing)}")

    def split(names: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
        raw = np.frombuffer(b"".join(batches[n] for n in names), np.uint8)
        if raw.size % _CIFAR_RECORD:
            raise ValueError(f"CIFAR-10 batches {names} are not a whole number of {_CIFAR_RECORD}-byte records")
        records = raw.reshape(-1, _CIFAR_RECORD)
        images = records[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        return np.ascontiguousarray(images), records[:, 0].astype(np.int64)

    return split(CIFAR_BATCHES[:5]) + split(CIFAR_BATCHES[5:])


def _decode_images(members: list[tuple[tuple[str, ...], bytes]]) -> Arrays:
    try:
        from PIL import Image
    except ImportError:
        raise ImportError("decoding CIFAR-10 JPEG files needs Pillow (pip install pillow)") from None
    found: dict[str, list[tuple[str, str, bytes]]] = {"train": [], "test": []}
    for parts, data in members:
        if len(parts) >= 3 and parts[-3] in found and parts[-1].lower().endswith(_IMAGE_SUFFIXES):
            found[parts[-3]].append((parts[-2], parts[-1], data))
    classes = sorted({c for c, _, _ in found["train"]})
    if not classes or not found["test"]:
        raise FileNotFoundError("no train/<class>/*.jpg and test/<class>/*.jpg images found")
    out: list[np.ndarray] = []
    for split in ("train", "test"):
        items = sorted(found[split], key=lambda item: (item[0], item[1]))
        unknown = {c for c, _, _ in items} - set(classes)
        if unknown:
            raise ValueError(f"test classes {sorted(unknown)} do not appear in train")
        order = np.random.default_rng(0).permutation(len(items))   # mix classes, as the binary release does
        images = np.stack([np.asarray(Image.open(io.BytesIO(items[i][2])).convert("RGB")) for i in order])
        out += [images, np.array([classes.index(items[i][0]) for i in order], dtype=np.int64)]
    return tuple(out)
