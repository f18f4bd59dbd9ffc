"""The decode cache: an image folder or archive decoded once, read back as uint8 arrays in well under a second.

A cache file holds a decoded ``ImageData`` (train/test images and labels, classes, normalisation,
skipped files) under a *key*: a hash of what was decoded (every file's path, size and mtime, or
the archive's) and how (gray/RGB, size, ``DECODE_VERSION``). A different key means the data or
the decoder changed, and the set is decoded again. The file is written atomically, and every
array carries a CRC-32: a truncated or damaged cache is rejected and rebuilt, never half-read.

Cache files live in the user cache directory (``~/.cache/digitlab/images``), or in a
``.digitlab-cache`` folder beside the data where the cache directory is not writable. A
read-only data folder (a shared dataset) is never written to.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from digitlab.data.base import ImageData
from digitlab.data.locate import cache_dir

log = logging.getLogger(__name__)

MAGIC = b"digitlab image cache 1\n"
_LEN = struct.Struct("<Q")  # header length
ARRAYS = ("train_x", "train_y", "test_x", "test_y")
MAX_HEADER = 64 * 2**20  # a header is a few KB (plus skipped-file messages); more means a damaged file


def content_key(parts: object) -> str:
    """A hash of anything JSON can write: the fingerprint of a dataset's files and decode settings."""
    return hashlib.blake2b(json.dumps(parts, sort_keys=True).encode(), digest_size=16).hexdigest()


def candidates(source: Path, settings: object) -> list[Path]:
    """Where the cache of ``source`` decoded with ``settings`` may be: the user cache, then beside the data.

    The name depends on the source's absolute path and the settings, not on the content, so a
    changed folder overwrites its old cache instead of adding one.
    """
    where = content_key([str(source.resolve()), settings])[:16]
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", source.name).strip("-.") or "images"
    name = f"{stem}-{where}.cache"
    return [cache_dir() / "images" / name, source.resolve().parent / ".digitlab-cache" / name]


def _crc(a: np.ndarray) -> int:
    return zlib.crc32(np.ascontiguousarray(a).data.cast("B"))


def write(path: Path, key: str, data: ImageData) -> None:
    """Write ``data`` under ``key`` atomically (temporary file, fsync, rename)."""
    from digitlab.engine.checkpoint import write_atomically

    arrays = {n: getattr(data, n).cpu().contiguous().numpy() for n in ARRAYS}
    spec, offset = [], 0
    for n, a in arrays.items():
        spec.append(dict(name=n, dtype=a.dtype.str, shape=list(a.shape), offset=offset, crc=_crc(a)))
        offset += a.nbytes
    meta = dict(
        name=data.name,
        classes=data.classes,
        mean=list(data.mean),
        std=list(data.std),
        skipped=data.skipped,
        note=data.note,
    )
    header = json.dumps(dict(key=key, arrays=spec, meta=meta, payload=offset)).encode()

    def fill(f) -> None:
        f.write(MAGIC + _LEN.pack(len(header)) + header)
        for a in arrays.values():
            f.write(a.data.cast("B"))

    write_atomically(path, fill)


def read(path: Path, key: str) -> ImageData | None:
    """The cached data if ``path`` holds an intact cache for ``key``; None if absent, stale or damaged."""
    try:
        with open(path, "rb") as f:
            if f.read(len(MAGIC)) != MAGIC:
                raise ValueError("not a digitlab image cache")
            (n,) = _LEN.unpack(f.read(_LEN.size))
            if n > MAX_HEADER:
                raise ValueError(f"header of {n} bytes")
            head = json.loads(f.read(n))
            if head["key"] != key:
                return None  # made from other files or settings: stale, not damaged
            start = len(MAGIC) + _LEN.size + n
            if os.fstat(f.fileno()).st_size != start + head["payload"]:
                raise ValueError("file size does not match its header (truncated?)")
            out = {}
            for s in head["arrays"]:
                a = np.empty(s["shape"], np.dtype(s["dtype"]))
                f.seek(start + s["offset"])
                if f.readinto(a.data.cast("B")) != a.nbytes:
                    raise ValueError(f"{s['name']} is truncated")
                if _crc(a) != s["crc"]:
                    raise ValueError(f"{s['name']} fails its checksum")
                out[s["name"]] = torch.from_numpy(a)
        meta = head["meta"]
        if set(out) != set(ARRAYS) or out["train_x"].dtype != torch.uint8 or out["test_x"].dtype != torch.uint8:
            raise ValueError("arrays missing or of the wrong type")
        k = len(meta["classes"])
        for y in ("train_y", "test_y"):
            if len(out[y]) and (int(out[y].min()) < 0 or int(out[y].max()) >= k):
                raise ValueError(f"{y} outside 0..{k - 1}")
        return ImageData(
            name=str(meta.get("name", "")),
            train_x=out["train_x"],
            train_y=out["train_y"],
            test_x=out["test_x"],
            test_y=out["test_y"],
            classes=list(meta["classes"]),
            mean=tuple(meta["mean"]),
            std=tuple(meta["std"]),
            skipped=list(meta["skipped"]),
            note=meta.get("note"),
        )
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, IndexError, struct.error) as exc:
        log.warning("ignoring damaged image cache %s (%s); decoding again", path, exc)
        return None


def cached(source: Path, settings: object, key: str, build: Callable[[], ImageData]) -> ImageData:
    """``build()``'s data, from the cache when one for ``key`` exists, else built and cached.

    Args:
        source: the folder or archive (names the cache file).
        settings: how it is decoded (part of the cache file's name).
        key: ``content_key`` of the files and settings; the cache is used only when it matches.
        build: decodes the data (only called on a miss).
    """
    paths = candidates(source, settings)
    for p in paths:
        data = read(p, key)
        if data is not None:
            log.info("decoded images from cache %s", p)
            return data
    data = build()
    for p in paths:
        try:
            write(p, key, data)
            log.info("cached decoded images in %s", p)
            break
        except OSError as exc:  # read-only cache dir (or data dir): try the next, else just don't cache
            log.info("cannot write image cache %s (%s)", p, exc.strerror or exc)
    return data
