"""Safe image decoding: every image file enters digitlab through ``load_image`` or ``decode_image``.

Training folders, ``digitlab predict`` and the web app all decode here, under the same limits.
Pillow decodes; this module adds what a server and a CLI need on top: only the formats in
``ALLOWED_FORMATS`` are tried (Pillow would otherwise identify ICO, PCX, EPS through Ghostscript,
and some forty more, whatever the file is called or sent as), a byte limit and a pixel limit
checked from the header before any pixel is decoded (decompression bombs), the first frame of
animated or multi-page files, phone photos turned upright by their EXIF orientation, and one
clear ``DigitlabError`` for every way a file can be unreadable, whatever the decoder raises.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import BinaryIO

from PIL import Image, ImageOps

from digitlab.errors import DigitlabError

MAX_PIXELS = 40_000_000  # 40 megapixels: above any phone photo, far below what exhausts memory
MAX_BYTES = 100 * 1024 * 1024  # an encoded file larger than this is not a digit photo
# The formats cameras, scanners, browsers' canvases and datasets produce. Every other Pillow plugin
# is code that parses hostile bytes for no user (EPS even starts Ghostscript), so none is tried.
ALLOWED_FORMATS = ("PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP")

ImageSource = str | Path | bytes | bytearray | BinaryIO


def _describe(source: ImageSource) -> str:
    if isinstance(source, (str, Path)):
        return str(source)
    if isinstance(source, (bytes, bytearray)):
        return "image bytes"
    return getattr(source, "name", None) or "image stream"


def _read_bytes(source: ImageSource) -> bytes:
    if isinstance(source, (bytes, bytearray)):
        return bytes(source)
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.exists():
            raise DigitlabError(f"{path}: no such file")
        if path.is_dir():
            raise DigitlabError(f"{path}: is a folder, not an image")
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise DigitlabError(f"{path}: file is {size / 2**20:.0f} MB, over the {MAX_BYTES // 2**20} MB limit")
        try:
            return path.read_bytes()
        except OSError as exc:
            raise DigitlabError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    data = source.read(MAX_BYTES + 1)
    if len(data) > MAX_BYTES:
        raise DigitlabError(f"{_describe(source)}: over the {MAX_BYTES // 2**20} MB limit")
    return data


def load_image(source: ImageSource) -> Image.Image:
    """Decode an image file, bytes or binary stream into a fully loaded PIL image.

    Args:
        source: a path, the encoded bytes, or a binary file object (at most ``MAX_BYTES``).

    Returns:
        The first frame, turned upright by its EXIF orientation, in the file's own mode
        (``digitlab.inference.preprocess`` handles every mode).

    Raises:
        DigitlabError: missing path, empty, truncated, corrupt or non-image data, a format
            outside ``ALLOWED_FORMATS``, more than ``MAX_BYTES`` bytes or ``MAX_PIXELS`` pixels.
    """
    return decode_image(_read_bytes(source), _describe(source))


def decode_image(data: bytes, name: str = "image bytes") -> Image.Image:
    """Decode encoded image bytes (see ``load_image``); ``name`` is what error messages call them.

    Raises:
        DigitlabError: for every input that is not a readable image within the limits; no
            other exception escapes, whatever the decoder raises on corrupt data.
    """
    if len(data) > MAX_BYTES:
        raise DigitlabError(f"{name}: over the {MAX_BYTES // 2**20} MB limit")
    if not data:
        raise DigitlabError(f"{name}: empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            # Pillow warns between MAX_IMAGE_PIXELS and twice that; treat the warning as the error.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            warnings.simplefilter("ignore", UserWarning)  # "Corrupt EXIF data" and the like: read what is readable
            img: Image.Image = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
            w, h = img.size  # from the header: nothing decoded yet
            if w * h > MAX_PIXELS:
                raise DigitlabError(f"{name}: {w}x{h} pixels is over the limit of {MAX_PIXELS / 1e6:.0f} megapixels")
            if w == 0 or h == 0:
                raise DigitlabError(f"{name}: image has no pixels ({w}x{h})")
            if getattr(img, "n_frames", 1) > 1:
                img.seek(0)  # animated GIF/WebP/APNG or multi-page TIFF: the first frame
            img.load()
            try:
                img = ImageOps.exif_transpose(img) or img
            except Exception:  # a broken EXIF block should not make a readable image unreadable
                pass
            return img
    except DigitlabError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DigitlabError(f"{name}: too many pixels (decompression bomb?): {exc}") from exc
    except Image.UnidentifiedImageError as exc:
        raise DigitlabError(f"{name}: not an image digitlab reads ({', '.join(ALLOWED_FORMATS)})") from exc
    except MemoryError as exc:
        raise DigitlabError(f"{name}: too large to decode") from exc
    except Exception as exc:  # noqa: BLE001 - corrupt data: decoders raise OSError, SyntaxError, ValueError,
        # EOFError, IndexError, TypeError, struct.error, even NotImplementedError; each means "unreadable"
        raise DigitlabError(
            f"{name}: corrupt or truncated image ({type(exc).__name__}: {' '.join(str(exc).split())[:200]})"
        ) from exc
