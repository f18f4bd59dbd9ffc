"""Reading the small text datasets (USPS, optdigits) as distributed: plain, gzip or Unix ``compress``.

UCI serves optdigits as ``.Z`` files (LZW, the format of the old ``compress`` tool), which the
standard library cannot open, so ``unlzw`` decodes it here (about 40 lines, no dependency).
"""

from __future__ import annotations

import gzip
import io
import zlib
from pathlib import Path
from typing import TYPE_CHECKING

from digitlab.errors import DigitlabError

if TYPE_CHECKING:
    import torch

    from digitlab.data.base import ImageData


GZIP_MAGIC = b"\x1f\x8b"
LZW_MAGIC = b"\x1f\x9d"
MAX_TEXT_BYTES = 64 * 2**20  # far above any of these sets (a few MB): a bigger stream is not one of them


def read_text(path: Path) -> str:
    """A text file's content; gzip and ``compress`` files (told by content, not by name) are decompressed."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DigitlabError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if raw[:2] == GZIP_MAGIC:
        try:
            with gzip.GzipFile(fileobj=io.BytesIO(raw)) as f:
                raw = f.read(MAX_TEXT_BYTES + 1)
        except EOFError as exc:
            raise DigitlabError(f"{path} is truncated: the gzip stream ends early (re-download it)") from exc
        except (OSError, zlib.error) as exc:
            raise DigitlabError(f"{path} is a corrupt gzip file ({exc}); re-download it") from exc
    elif raw[:2] == LZW_MAGIC:
        raw = unlzw(raw, str(path))
    if len(raw) > MAX_TEXT_BYTES:
        raise DigitlabError(f"{path}: over {MAX_TEXT_BYTES // 2**20} MB of text, not a digit set")
    try:
        return raw.decode("ascii")
    except UnicodeDecodeError as exc:
        raise DigitlabError(f"{path} is not a text file (byte {exc.start} is not ASCII)") from exc


def _next_group(pos: int, group: int, bits: int) -> int:
    """The first bit after the current group of eight ``bits``-wide codes that began at ``group``."""
    span = 8 * bits
    return group + -(-(pos - group) // span) * span


def unlzw(data: bytes, source: str = "data") -> bytes:
    """Decompress a Unix ``compress`` (.Z) stream.

    Codes are 9 to ``maxbits`` bits wide, least significant bit first. ``compress`` writes them in
    groups of eight: when the width grows or the table is cleared (code 256 in block mode), the
    rest of the current group is padding. The decoder's table lags the encoder's by one entry, so
    the width grows when the table has outgrown the current width (as in ``compress -d``).
    """
    if len(data) < 3 or data[:2] != LZW_MAGIC:
        raise DigitlabError(f"{source}: not a compress (.Z) stream")
    maxbits, block = data[2] & 0x1F, bool(data[2] & 0x80)
    if not 9 <= maxbits <= 16:
        raise DigitlabError(f"{source}: unsupported compress code size {maxbits}")
    first = 257 if block else 256  # block mode keeps code 256 for "clear"
    table = [bytes([i]) for i in range(256)] + [b""] * (first - 256)
    total, pos, group, bits = 8 * len(data), 24, 24, 9
    out: list[bytes] = []
    size = 0
    prev = b""
    while True:
        if len(table) > (1 << bits) - 1 and bits < maxbits:
            group = pos = _next_group(pos, group, bits)
            bits += 1
        if pos + bits > total:
            break
        byte = pos >> 3
        code = (int.from_bytes(data[byte : byte + 3], "little") >> (pos & 7)) & ((1 << bits) - 1)
        pos += bits
        if block and code == 256:
            del table[first:]
            group = pos = _next_group(pos, group, bits)
            bits, prev = 9, b""
            continue
        if code < len(table):
            entry = table[code]
        elif code == len(table) and prev:
            entry = prev + prev[:1]  # the code being defined by this very step
        else:
            raise DigitlabError(f"{source}: corrupt compress stream (code {code} is not defined yet)")
        if prev and len(table) < (1 << maxbits):
            table.append(prev + entry[:1])
        out.append(entry)
        size += len(entry)
        if size > MAX_TEXT_BYTES:
            raise DigitlabError(f"{source}: decompresses to over {MAX_TEXT_BYTES // 2**20} MB, not a digit set")
        prev = entry
    return b"".join(out)


def digit_set(
    name: str, train: tuple[torch.Tensor, torch.Tensor], test: tuple[torch.Tensor, torch.Tensor], source: Path
) -> ImageData:
    """A text set of the ten digits as ``ImageData``, normalised with its own training images' statistics."""
    from digitlab.data.base import ImageData, channel_stats

    mean, std = channel_stats(train[0])
    return ImageData(
        name=name,
        train_x=train[0],
        train_y=train[1],
        test_x=test[0],
        test_y=test[1],
        classes=[str(i) for i in range(10)],
        mean=mean,
        std=std,
        source=str(source),
    )
