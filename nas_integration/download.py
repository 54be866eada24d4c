"""Fetch the standard files of a full dataset from its public sources, each checked against known MD5s.

A ``.gz`` file is accepted when either the archive or its decompressed content has a known MD5, so a
re-compressed copy of the official bytes passes. A file that fails the check is deleted and is an error;
when no source answers, the error lists the URLs to fetch by hand and the folder to put them in. A whole
download has a deadline (``DEADLINE`` seconds, checked after every read; one read waits at most ``timeout``),
so a server that sends a trickle of bytes cannot hold a search forever.
"""
from __future__ import annotations

import gzip
import hashlib
import os
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

_CHUNK = 1 << 16
DEADLINE = 600.0  # seconds a whole download may take, every file and mirror together


@dataclass(frozen=True)
class Remote:
    """One file of a dataset and the MD5s it may have (of the file, or of its decompressed content)."""

    name: str
    md5: tuple[str, ...]


@dataclass(frozen=True)
class Source:
    """Where a dataset's files come from: base URLs tried in order, and the files."""

    mirrors: tuple[str, ...]
    files: tuple[Remote, ...]


SOURCES: dict[str, Source] = {
    "mnist": Source(
        ("https://ossci-datasets.s3.amazonaws.com/mnist/", "https://storage.googleapis.com/cvdf-datasets/mnist/"),
        (Remote("train-images-idx3-ubyte.gz", ("f68b3c2dcbeaaa9fbdd348bbdeb94873", "6bbc9ace898e44ae57da46a324031adb")),
         Remote("train-labels-idx1-ubyte.gz", ("d53e105ee54ea40749a09fcbcd1e9432", "a25bea736e30d166cdddb491f175f624")),
         Remote("t10k-images-idx3-ubyte.gz", ("9fb629c4189551a2d022fa330f9573f3", "2646ac647ad5339dbf082846283269ea")),
         Remote("t10k-labels-idx1-ubyte.gz", ("ec29112dd5afa0611ce80d1b7f02629c", "27ae3e4e09519cfbb04c329615203637")))),
    "fashion-mnist": Source(
        ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        (Remote("train-images-idx3-ubyte.gz", ("8d4fb7e6c68d591d4c3dfef9ec88bf0d",)),
         Remote("train-labels-idx1-ubyte.gz", ("25c81989df183df01b3e8a0aad5dffbe",)),
         Remote("t10k-images-idx3-ubyte.gz", ("bef4ecab320f06d8554ea6380940ec79",)),
         Remote("t10k-labels-idx1-ubyte.gz", ("bb300cfdad3c16e7a12a480ee83cd310",)))),
    "cifar10": Source(
        ("https://www.cs.toronto.edu/~kriz/",),
        (Remote("cifar-10-binary.tar.gz", ("c32a1d4ab5d03f1284b67883e8d87530",)),)),
}


class ChecksumError(ValueError):
    """A downloaded file's MD5 is not one of the known ones (the file has been deleted)."""


def file_digests(path: str | os.PathLike) -> set[str]:
    """MD5 of the file, plus MD5 of its decompressed content when it is gzip."""
    digests = {_md5(open(path, "rb"))}
    if str(path).endswith(".gz"):
        try:
            digests.add(_md5(gzip.open(path, "rb")))
        except (OSError, EOFError):
            pass  # not valid gzip: only the file's own digest can match
    return digests


def download(name: str, folder: str | os.PathLike, mirror: str | None = None, timeout: float = 20.0,
             deadline: float = DEADLINE) -> Path:
    """Download dataset ``name`` into ``folder`` (files already there are kept) and return the folder.

    ``mirror`` replaces the public base URLs (a local copy of the files). A checksum mismatch raises
    ChecksumError; no reachable source, or no whole download within ``deadline`` seconds (plus at most
    one ``timeout``), raises FileNotFoundError saying what to fetch and where to put it.
    """
    source = SOURCES[name]
    folder = Path(folder).expanduser()
    mirrors = (mirror.rstrip("/") + "/",) if mirror else source.mirrors
    stop = time.monotonic() + deadline
    for remote in source.files:
        target = folder / remote.name
        if target.is_file():
            continue
        folder.mkdir(parents=True, exist_ok=True)
        errors = []
        for base in mirrors:
            try:
                _fetch(base + remote.name, target, timeout, stop)
                break
            except (urllib.error.URLError, OSError) as exc:
                errors.append(f"{base + remote.name}: {getattr(exc, 'reason', exc)}")
        else:
            urls = "\n  ".join(m + r.name for r in source.files for m in mirrors[:1])
            raise FileNotFoundError(
                f"{name} is not on this machine and could not be downloaded within the {deadline:g} s deadline "
                f"({'; '.join(errors)}). Download these files:\n  {urls}\nand put them in {folder} (or in any "
                f"folder given with --data-dir / data_dir)")
        got = file_digests(target)
        if not got & set(remote.md5):
            target.unlink()
            raise ChecksumError(f"{name}: {remote.name} downloaded from {mirrors[0]} has MD5 "
                                f"{sorted(got)}, expected one of {list(remote.md5)}; the file was deleted")
    return folder


def _fetch(url: str, target: Path, timeout: float, stop: float) -> None:
    """Stream ``url`` to ``target`` through a temporary file, with a progress bar on stderr; TimeoutError once
    ``time.monotonic()`` passes ``stop`` (checked after each read, which returns what has arrived)."""
    if time.monotonic() >= stop:
        raise TimeoutError("not tried: the download deadline had passed")
    part = target.with_name(f".{target.name}.{os.getpid()}.part")
    try:
        with urllib.request.urlopen(url, timeout=min(timeout, stop - time.monotonic())) as response, \
                open(part, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            columns = (TextColumn(f"[bold]{target.name}"), BarColumn(), DownloadColumn(), TransferSpeedColumn())
            with Progress(*columns, console=Console(file=sys.stderr)) as progress:
                task = progress.add_task("download", total=total)
                while chunk := response.read1(_CHUNK):
                    out.write(chunk)
                    progress.advance(task, len(chunk))
                    if time.monotonic() > stop:
                        raise TimeoutError(f"gave up at the download deadline after {out.tell()} bytes")
        os.replace(part, target)
    finally:
        part.unlink(missing_ok=True)


def _md5(stream) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with stream:
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
