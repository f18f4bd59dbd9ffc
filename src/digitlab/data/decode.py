"""Many image files to one uint8 array: the decoding step of image folders and image archives.

Every file goes through ``digitlab.inference.image.decode_image`` (the same formats, byte and
pixel limits as ``digitlab predict`` and the web app), is converted to gray or RGB and resized
to a square. Large sets are decoded in a process pool of the core count (Pillow spends most of
a small image's time in Python, so threads do not help), with a progress bar.
"""

from __future__ import annotations

import contextlib
import io
import multiprocessing
import os
import sys
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from digitlab.inference.image import ALLOWED_FORMATS, decode_image, load_image

# Bump when decoding changes what an image becomes: caches made by another version are rebuilt.
DECODE_VERSION = 1
GRAY_MODES = {"1", "L", "LA", "La", "I", "F", "I;16", "I;16B", "I;16L", "I;16N"}
POOL_MIN = 256  # below this many images a process pool costs more than it saves
PROGRESS_MIN = 2000  # below this many images decoding takes too little time for a bar
CHUNK_MAX = 1000  # images per pool task: few round trips, and a bar that still moves

# A file on disk, or (name, encoded bytes) from an archive.
Source = str | Path | tuple[str, bytes]


def default_workers() -> int:
    """The cores this process may run on (its affinity mask, not the machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def _open(source: Source) -> Image.Image:
    if isinstance(source, tuple):
        return decode_image(source[1], source[0])
    return load_image(source)


def _palette_is_gray(im: Image.Image) -> bool:
    pal = im.getpalette() or []
    return all(pal[i] == pal[i + 1] == pal[i + 2] for i in range(0, len(pal) - 2, 3))


def probe_gray(source: Source) -> bool:
    """Whether an image is gray, from its header (cheap: no pixel data is decoded)."""
    f = io.BytesIO(source[1]) if isinstance(source, tuple) else source
    with Image.open(f, formats=ALLOWED_FORMATS) as im:
        return im.mode in GRAY_MODES or (im.mode == "P" and _palette_is_gray(im))


def _high_depth_to_l(im: Image.Image) -> Image.Image:
    """16-bit / 32-bit / float gray to 8 bits; PIL's own convert('L') clips instead of scaling."""
    a = np.asarray(im).astype(np.float64)
    if im.mode == "F":
        a = a * 255.0 if a.size and a.max() <= 1.0 else a
    elif a.size and (im.mode.startswith("I;16") or a.max() > 255):
        a = a / 257.0  # 0..65535 -> 0..255
    return Image.fromarray(np.rint(a).clip(0, 255).astype(np.uint8), mode="L")


def to_array(im: Image.Image, gray: bool, size: int) -> np.ndarray:
    """A decoded image to uint8 (1, size, size) or (3, size, size), channels first like the tensors."""
    if im.mode in ("I", "F") or im.mode.startswith("I;16"):
        im = _high_depth_to_l(im)
    if im.mode in ("RGBA", "LA", "La", "RGBa", "PA") or "transparency" in im.info:
        # Transparent background means paper: composite on white, not on black.
        rgba = im.convert("RGBA")
        im = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    im = im.convert("L" if gray else "RGB")
    if im.size != (size, size):
        im = im.resize((size, size), Image.Resampling.BILINEAR)  # antialiased when shrinking
    a = np.asarray(im, dtype=np.uint8)
    return a[None] if gray else a.transpose(2, 0, 1)


def _name(source: Source) -> str:
    return source[0] if isinstance(source, tuple) else str(source)


def _error(exc: Exception) -> str:
    return str(exc) if type(exc).__name__ == "DigitlabError" else f"{type(exc).__name__}: {exc}"


def _decode_chunk(sources: Sequence[Source], gray: bool, size: int) -> tuple[np.ndarray, list[str | None]]:
    """Decode a chunk: the arrays of the readable images stacked, and one error (or None) per source."""
    out = np.empty((len(sources), 1 if gray else 3, size, size), np.uint8)
    errors: list[str | None] = []
    k = 0
    for s in sources:
        try:
            out[k] = to_array(_open(s), gray, size)
            k += 1
            errors.append(None)
        except Exception as exc:  # noqa: BLE001 - any decoder failure means "skip this file"
            errors.append(f"{_name(s)}: {_error(exc)}")
    return out[:k], errors


def _probe_chunk(sources: Sequence[Source]) -> list[bool | str]:
    """Per source: True/False (gray or not), or the error that makes it unreadable."""
    out: list[bool | str] = []
    for s in sources:
        try:
            out.append(probe_gray(s))
        except Exception as exc:  # noqa: BLE001
            out.append(f"{_name(s)}: {_error(exc)}")
    return out


def _pool(workers: int) -> ProcessPoolExecutor:
    # fork on Linux: children start in milliseconds with the modules already imported, and they
    # run only Pillow and numpy. Elsewhere fork is unsafe or absent; spawn re-imports digitlab.
    ctx = multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")
    return ProcessPoolExecutor(max_workers=workers, mp_context=ctx)


def _run_chunks(fn, sources: Sequence[Source], args: tuple, workers: int, progress: bool, what: str) -> list:
    n = len(sources)
    workers = min(workers, max(1, n // POOL_MIN))
    size = max(1, min(CHUNK_MAX, -(-n // (workers * 4))))
    chunks = [sources[i : i + size] for i in range(0, n, size)]
    results: list = []
    with contextlib.ExitStack() as stack:
        bar = task = None
        if progress and n >= PROGRESS_MIN:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            columns = (TextColumn(what), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
            bar = stack.enter_context(Progress(*columns, transient=True))
            task = bar.add_task(what, total=n)
        if workers > 1:
            pool = stack.enter_context(_pool(workers))
            parts = pool.map(fn, chunks, *([a] * len(chunks) for a in args))  # in order, as chunks finish
        else:
            parts = (fn(chunk, *args) for chunk in chunks)
        for chunk, part in zip(chunks, parts, strict=True):
            results.append(part)
            if bar is not None and task is not None:
                bar.advance(task, len(chunk))
    return results


def probe_all(sources: Sequence[Source], *, workers: int, progress: bool) -> list[bool | str]:
    """``probe_gray`` of every source (or its error), in order."""
    return [r for part in _run_chunks(_probe_chunk, sources, (), workers, progress, "checking images") for r in part]


def decode_all(
    sources: Sequence[Source], gray: bool, size: int, *, workers: int, progress: bool
) -> tuple[np.ndarray, list[str | None]]:
    """Decode every source to uint8 (N_ok, C, size, size), in order, and one error (or None) per source."""
    parts = _run_chunks(_decode_chunk, sources, (gray, size), workers, progress, "decoding images")
    errors = [e for _, errs in parts for e in errs]
    arrays = [a for a, _ in parts if len(a)]
    x = np.concatenate(arrays) if arrays else np.empty((0, 1 if gray else 3, size, size), np.uint8)
    return x, errors
