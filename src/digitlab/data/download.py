"""Downloading datasets from their official mirrors, verified and written atomically.

Each file goes to a temporary file in the destination folder, is checked against its md5,
and only then renamed into place (``os.replace``), so an interrupted or corrupt download
never leaves a file the loaders would trust. Mirrors can be replaced with the ``mirrors``
argument or ``$DIGITLAB_MIRRORS`` (comma-separated base URLs), e.g. for a local server.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import os
import tempfile
import urllib.error
import urllib.request
import zlib
from pathlib import Path

from digitlab.errors import DigitlabError

ENV_MIRRORS = "DIGITLAB_MIRRORS"
TIMEOUT_S = 30.0  # per connection attempt and per read; a dead mirror must not hang the CLI
CHUNK = 1 << 20

MIRRORS = {
    "mnist": ["https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"],
    "fashion-mnist": ["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"],
    "cifar10": ["https://www.cs.toronto.edu/~kriz/"],
    "usps": ["https://hastie.su.domains/ElemStatLearn/datasets/"],
    "optdigits": ["https://archive.ics.uci.edu/ml/machine-learning-databases/optdigits/"],
}

# Accepted md5s per file: the official .gz, and for IDX files also the decompressed content
# (a recompressed .gz has another md5 but the same images).
CHECKSUMS: dict[str, dict[str, tuple[str, ...]]] = {
    "mnist": {
        "train-images-idx3-ubyte.gz": ("f68b3c2dcbeaaa9fbdd348bbdeb94873", "6bbc9ace898e44ae57da46a324031adb"),
        "train-labels-idx1-ubyte.gz": ("d53e105ee54ea40749a09fcbcd1e9432", "a25bea736e30d166cdddb491f175f624"),
        "t10k-images-idx3-ubyte.gz": ("9fb629c4189551a2d022fa330f9573f3", "2646ac647ad5339dbf082846283269ea"),
        "t10k-labels-idx1-ubyte.gz": ("ec29112dd5afa0611ce80d1b7f02629c", "27ae3e4e09519cfbb04c329615203637"),
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte.gz": ("8d4fb7e6c68d591d4c3dfef9ec88bf0d",),
        "train-labels-idx1-ubyte.gz": ("25c81989df183df01b3e8a0aad5dffbe",),
        "t10k-images-idx3-ubyte.gz": ("bef4ecab320f06d8554ea6380940ec79",),
        "t10k-labels-idx1-ubyte.gz": ("bb300cfdad3c16e7a12a480ee83cd310",),
    },
    "cifar10": {"cifar-10-python.tar.gz": ("c58f30108f718f92721af3b95e74349a",)},
    # USPS: the .gz and its text (the test split, zip.test.gz, is used when present but has no
    # published md5, so it is not fetched). optdigits: UCI serves Unix-compress .Z files; accepted by
    # the md5 of their text (the same text as the .gz copies whose md5s are given too).
    "usps": {"zip.train.gz": ("206835541ea704bcfb4b6eea872678bf", "a2d376ecc766edab27f0c4621f180f99")},
    "optdigits": {
        "optdigits-orig.tra.Z": ("7b4510ef07261e75072accf6b6ac2e15", "64720d5b8231d1ec3af11e895456073c"),
        "optdigits-orig.cv.Z": ("6f3f3e44f3c209670893c83c06116caf", "55ce8078238674a5db5059a70fc3f562"),
    },
}


def mirrors_for(dataset: str, mirrors: list[str] | None = None) -> list[str]:
    """Base URLs to try, in order: the argument, then $DIGITLAB_MIRRORS, then the official ones."""
    if mirrors:
        return list(mirrors)
    env = os.environ.get(ENV_MIRRORS, "").strip()
    if env:
        return [m.strip() for m in env.replace(";", ",").split(",") if m.strip()]
    return list(MIRRORS[dataset])


def md5_file(path: Path) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def _md5_gunzipped(path: Path) -> str | None:
    h = hashlib.md5(usedforsecurity=False)
    try:
        with gzip.open(path, "rb") as f:
            for block in iter(lambda: f.read(CHUNK), b""):
                h.update(block)
    except (OSError, EOFError, zlib.error):
        return None
    return h.hexdigest()


def checksum_ok(path: Path, accepted: tuple[str, ...] | list[str] | str | None) -> bool:
    """True if the file's md5 (or, for .gz, its decompressed content's md5) is accepted."""
    if not accepted:
        return True
    accepted = {accepted} if isinstance(accepted, str) else set(accepted)
    if md5_file(path) in accepted:
        return True
    if _is_lzw(path):  # told by content: a download is checked under its temporary name
        return _md5_unlzw(path) in accepted
    return path.name.endswith(".gz") and _md5_gunzipped(path) in accepted


def _is_lzw(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == b"\x1f\x9d"


def _md5_unlzw(path: Path) -> str | None:
    from digitlab.data.textfile import unlzw

    try:
        return hashlib.md5(unlzw(path.read_bytes(), str(path)), usedforsecurity=False).hexdigest()
    except DigitlabError:
        return None


def _progress(enabled: bool):
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        console=Console(stderr=True),
        disable=not enabled,
        transient=False,
    )


def _fetch(url: str, dest: Path, progress: bool, timeout: float) -> Path:
    """Stream ``url`` into a temporary file next to ``dest``; returns the temporary path."""
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; data files are shared like any download
    try:
        req = urllib.request.Request(url, headers={"User-Agent": "digitlab"})
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(req, timeout=timeout) as resp:
            total = int(resp.headers.get("Content-Length") or 0) or None
            with _progress(progress) as bar:
                task = bar.add_task(dest.name, total=total)
                for block in iter(lambda: resp.read(CHUNK), b""):
                    out.write(block)
                    bar.advance(task, len(block))
            if total is not None and out.tell() != total:
                raise OSError(f"connection closed after {out.tell()} of {total} bytes")
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return Path(tmp)


def download_file(
    name: str,
    dest_dir: str | os.PathLike,
    base_urls: list[str],
    md5: tuple[str, ...] | list[str] | str | None = None,
    *,
    progress: bool = True,
    timeout: float = TIMEOUT_S,
) -> Path:
    """Download ``name`` from the first base URL that serves it with an accepted md5.

    Args:
        name: file name, appended to each base URL.
        dest_dir: folder to write into (created if needed).
        base_urls: mirrors to try in order.
        md5: accepted md5 digest(s); None skips the check.
        progress: show a Rich progress bar on stderr.
        timeout: seconds per connection attempt / read.

    Returns the final path. Raises DigitlabError naming every URL tried and why it failed.
    """
    dest_dir = Path(dest_dir)
    try:
        dest_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DigitlabError(f"cannot create download folder {dest_dir}: {exc.strerror or exc}") from exc
    dest = dest_dir / name
    failures = []
    for base in base_urls:
        url = base if base.endswith(name) else base.rstrip("/") + "/" + name
        try:
            tmp = _fetch(url, dest, progress, timeout)
        except urllib.error.HTTPError as exc:
            failures.append(f"{url}: HTTP {exc.code} {exc.reason}")
            continue
        except urllib.error.URLError as exc:
            failures.append(f"{url}: {exc.reason}")
            continue
        except (OSError, ValueError, http.client.HTTPException) as exc:  # timeouts, resets, bad URLs, disk full
            failures.append(f"{url}: {exc}")
            continue
        try:
            if not checksum_ok(tmp, md5):
                failures.append(f"{url}: checksum mismatch (md5 {md5_file(tmp)}, expected {_fmt(md5)})")
                continue
            os.replace(tmp, dest)
            return dest
        finally:
            tmp.unlink(missing_ok=True)
    raise DigitlabError(f"could not download {name}:\n  " + "\n  ".join(failures or ["no mirrors given"]))


def _fmt(md5) -> str:
    return md5 if isinstance(md5, str) else " or ".join(md5)


def download_dataset(
    dataset: str,
    dest_dir: str | os.PathLike,
    *,
    mirrors: list[str] | None = None,
    checksums: dict[str, tuple[str, ...] | str | None] | None = None,
    progress: bool = True,
    timeout: float = TIMEOUT_S,
) -> list[Path]:
    """Download every file of ``mnist``, ``fashion-mnist`` or ``cifar10`` into ``dest_dir``.

    Files already present with a valid checksum are kept. ``checksums`` overrides the
    official md5s (tests serving small files); its keys are the files to fetch.
    """
    if dataset not in CHECKSUMS:
        raise DigitlabError(f"dataset {dataset!r} has nothing to download")
    files = checksums if checksums is not None else CHECKSUMS[dataset]
    urls = mirrors_for(dataset, mirrors)
    paths = []
    for name, md5 in files.items():
        existing = Path(dest_dir) / name
        if existing.is_file() and md5 and checksum_ok(existing, md5):
            paths.append(existing)
            continue
        paths.append(download_file(name, dest_dir, urls, md5, progress=progress, timeout=timeout))
    return paths
