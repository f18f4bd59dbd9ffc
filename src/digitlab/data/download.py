"""Downloading datasets from their official mirrors, verified and written atomically.

Each file goes to a temporary file in the destination folder, is checked against its md5,
and only then renamed into place (``os.replace``), so an interrupted or corrupt download
never leaves a file the loaders would trust. A download is bounded: a size cap from the
file's known size, an overall deadline and a minimum rate, so a mirror that sends too much
or drips bytes is dropped. The temporary file of a killed download is removed by the next
download of the same file (a live one holds a lock on its own). Mirrors can be replaced with the ``mirrors``
argument or ``$DIGITLAB_MIRRORS`` (comma-separated base URLs), e.g. for a local server.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import os
import tempfile
import time
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: a temporary file in use cannot be deleted there anyway
    fcntl = None  # type: ignore[assignment]

from digitlab.errors import DigitlabError

ENV_MIRRORS = "DIGITLAB_MIRRORS"
TIMEOUT_S = 30.0  # per connection attempt and per read; a dead mirror must not hang the CLI
CHUNK = 1 << 20
# A byte every few seconds keeps every read alive: a mirror must also deliver MIN_RATE bytes/s
# on average over each RATE_WINDOW_S window (16 KB/s: CIFAR-10's 163 MB in under 3 hours) ...
MIN_RATE = 16 * 1024
RATE_WINDOW_S = 60.0
# ... and finish a file within DEADLINE_S whatever its rate (CIFAR-10 at 50 KB/s takes 57 minutes).
DEADLINE_S = 3600.0
# The official files' sizes. A body over SIZE_SLACK times this is not the file (a recompressed
# .gz with the same content, which the content md5 accepts, may be somewhat larger), so it is
# dropped as soon as it is announced or has arrived, instead of being written in full first.
SIZES = {
    "train-images-idx3-ubyte.gz": {"mnist": 9_912_422, "fashion-mnist": 26_421_880},
    "train-labels-idx1-ubyte.gz": {"mnist": 28_881, "fashion-mnist": 29_515},
    "t10k-images-idx3-ubyte.gz": {"mnist": 1_648_877, "fashion-mnist": 4_422_102},
    "t10k-labels-idx1-ubyte.gz": {"mnist": 4_542, "fashion-mnist": 5_148},
    "cifar-10-python.tar.gz": {"cifar10": 170_498_071},
}
SIZE_SLACK = 2.0
# A file whose size is not known: twice CIFAR-10's archive, the largest file here.
MAX_BYTES = 2 * 170_498_071
# Hashing a .gz's content stops here: more than any accepted content (CIFAR-10's tar is 181 MB).
MAX_CONTENT_BYTES = 256 << 20
PART_PREFIX = ".part-"  # temporary names end with the file's own name, so .gz is still .gz

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
    """md5 of the inflated content; None if it is not gzip or inflates past ``MAX_CONTENT_BYTES``."""
    h = hashlib.md5(usedforsecurity=False)
    total = 0
    try:
        with gzip.open(path, "rb") as f:
            for block in iter(lambda: f.read(CHUNK), b""):
                total += len(block)
                if total > MAX_CONTENT_BYTES:
                    return None
                h.update(block)
    except (OSError, EOFError, zlib.error):
        return None
    return h.hexdigest()


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == b"\x1f\x8b"


def max_bytes_for(dataset: str, name: str) -> int:
    """The size cap of one file: ``SIZE_SLACK`` x its official size, or ``MAX_BYTES`` if unknown."""
    known = SIZES.get(name, {}).get(dataset)
    return int(known * SIZE_SLACK) if known else MAX_BYTES


def checksum_ok(path: Path, accepted: tuple[str, ...] | list[str] | str | None) -> bool:
    """True if the file's md5 (or, for gzip, its decompressed content's md5) is accepted.

    Gzip is told by the name or the content, so a temporary file is checked like the final one.
    """
    if not accepted:
        return True
    sums = {accepted} if isinstance(accepted, str) else set(accepted)
    if md5_file(path) in sums:
        return True
    if _is_lzw(path):  # told by content: a download is checked under its temporary name
        return _md5_unlzw(path) in sums
    return (path.name.endswith(".gz") or _is_gzip(path)) and _md5_gunzipped(path) in sums


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


class Dropped(OSError):
    """A mirror that answered but broke a limit (size, rate, deadline): the next one is tried."""


@dataclass(frozen=True)
class Limits:
    """What one download may take; the defaults are the module's constants (tests pass small ones)."""

    max_bytes: int = MAX_BYTES
    deadline_s: float = DEADLINE_S
    min_rate: float = MIN_RATE
    rate_window_s: float = RATE_WINDOW_S


def _lock(fd: int) -> bool:
    """Take the lock that marks a temporary file as in use; False if another process holds it."""
    if fcntl is None:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


def remove_stale_parts(dest: Path) -> list[Path]:
    """Delete the temporary files of ``dest`` that no live download holds (a killed one's)."""
    removed = []
    patterns = (f"{PART_PREFIX}*-{dest.name}", f".{dest.name}.*.part")  # the second: older digitlab
    for part in {p for pattern in patterns for p in dest.parent.glob(pattern)}:
        try:
            fd = os.open(part, os.O_RDONLY)
        except OSError:
            continue
        try:
            if _lock(fd):
                part.unlink(missing_ok=True)
                removed.append(part)
        except OSError:
            pass  # in use (Windows) or already gone
        finally:
            os.close(fd)
    return removed


def _copy_body(resp, out, bar, task, limits: Limits) -> None:
    """Copy the response body within the limits; raises Dropped when one is broken."""
    start = window_start = time.monotonic()
    window_bytes = 0
    while True:
        block = resp.read1(CHUNK)  # returns what has arrived: a drip cannot hide in a long read
        if not block:
            return
        out.write(block)
        bar.advance(task, len(block))
        if out.tell() > limits.max_bytes:
            raise Dropped(f"sent more than {limits.max_bytes:,} bytes, more than the file can be")
        now = time.monotonic()
        if now - start > limits.deadline_s:
            raise Dropped(f"took longer than {limits.deadline_s:g} s ({out.tell():,} bytes so far)")
        window_bytes += len(block)
        if now - window_start >= limits.rate_window_s:
            rate = window_bytes / (now - window_start)
            if rate < limits.min_rate:
                raise Dropped(
                    f"too slow: {rate:,.0f} bytes/s over {now - window_start:.0f} s (minimum {limits.min_rate:,.0f})"
                )
            window_start, window_bytes = now, 0


def _fetch(url: str, dest: Path, progress: bool, timeout: float, limits: Limits) -> tuple[Path, int]:
    """Stream ``url`` into a temporary file next to ``dest``.

    Returns the temporary path and a descriptor holding its lock: the caller closes it once the
    file is renamed into place or deleted, so no other download takes it for a killed one's.
    """
    fd, tmp = tempfile.mkstemp(prefix=PART_PREFIX, suffix=f"-{dest.name}", dir=dest.parent)
    _lock(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; data files are shared like any download
    try:
        req = urllib.request.Request(url, headers={"User-Agent": "digitlab"})
        with open(fd, "wb", buffering=0, closefd=False) as out, urllib.request.urlopen(req, timeout=timeout) as resp:
            total = int(resp.headers.get("Content-Length") or 0) or None
            if total is not None and total > limits.max_bytes:
                raise Dropped(f"announces {total:,} bytes, more than the file can be ({limits.max_bytes:,})")
            with _progress(progress) as bar:
                task = bar.add_task(dest.name, total=total)
                _copy_body(resp, out, bar, task, limits)
            if total is not None and out.tell() != total:
                raise OSError(f"connection closed after {out.tell()} of {total} bytes")
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        os.close(fd)
        raise
    return Path(tmp), fd


def download_file(
    name: str,
    dest_dir: str | os.PathLike,
    base_urls: list[str],
    md5: tuple[str, ...] | list[str] | str | None = None,
    *,
    progress: bool = True,
    timeout: float = TIMEOUT_S,
    limits: Limits | None = None,
) -> Path:
    """Download ``name`` from the first base URL that serves it with an accepted md5.

    Args:
        name: file name, appended to each base URL.
        dest_dir: folder to write into (created if needed).
        base_urls: mirrors to try in order.
        md5: accepted md5 digest(s); None skips the check.
        progress: show a Rich progress bar on stderr.
        timeout: seconds per connection attempt / read.
        limits: size cap, deadline and minimum rate (default: ``Limits()``, the module's constants).

    Returns the final path. Raises DigitlabError naming every URL tried and why it failed.
    """
    dest_dir = Path(dest_dir)
    try:
        dest_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DigitlabError(f"cannot create download folder {dest_dir}: {exc.strerror or exc}") from exc
    dest = dest_dir / name
    remove_stale_parts(dest)
    limits = limits or Limits()
    failures = []
    for base in base_urls:
        url = base if base.endswith(name) else base.rstrip("/") + "/" + name
        try:
            tmp, lock = _fetch(url, dest, progress, timeout, limits)
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
            os.close(lock)
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
        limits = Limits(max_bytes=max_bytes_for(dataset, name))
        paths.append(download_file(name, dest_dir, urls, md5, progress=progress, timeout=timeout, limits=limits))
    return paths
