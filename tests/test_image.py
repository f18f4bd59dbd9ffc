"""Safe decoding (digitlab.inference.image): every kind of bad input is one clear DigitlabError."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from digitlab.errors import DigitlabError
from digitlab.inference.image import ALLOWED_FORMATS, MAX_PIXELS, decode_image, load_image


def png_bytes(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", **kw)
    return buf.getvalue()


def png_claiming_size(width: int, height: int) -> bytes:
    """A tiny valid-looking PNG whose header claims width x height (a decompression bomb)."""
    raw = png_bytes(Image.new("L", (8, 8), 255))
    ihdr = struct.pack(">II", width, height) + raw[24:29]  # keep bit depth, colour type, ...
    chunk = b"IHDR" + ihdr
    return raw[:8] + struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk)) + raw[33:]


def test_reads_path_bytes_and_stream(tmp_path):
    img = Image.new("RGB", (30, 20), "white")
    data = png_bytes(img)
    path = tmp_path / "a.png"
    path.write_bytes(data)
    for source in (path, str(path), data, io.BytesIO(data)):
        out = load_image(source)
        assert out.size == (30, 20) and out.mode == "RGB"


def test_missing_path(tmp_path):
    with pytest.raises(DigitlabError, match="no such file"):
        load_image(tmp_path / "nope.png")


def test_folder_is_not_an_image(tmp_path):
    with pytest.raises(DigitlabError, match="folder"):
        load_image(tmp_path)


def test_zero_bytes(tmp_path):
    p = tmp_path / "empty.png"
    p.write_bytes(b"")
    with pytest.raises(DigitlabError, match="empty"):
        load_image(p)
    with pytest.raises(DigitlabError, match="empty"):
        load_image(b"")


def test_text_file(tmp_path):
    p = tmp_path / "notes.png"
    p.write_text("this is not an image\n")
    with pytest.raises(DigitlabError, match="not an image"):
        load_image(p)


def test_truncated_png():
    data = png_bytes(Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)))
    with pytest.raises(DigitlabError, match="truncated|corrupt"):
        load_image(data[: len(data) // 2])


def test_truncated_jpeg():
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, "JPEG")
    with pytest.raises(DigitlabError, match="truncated|corrupt"):
        load_image(buf.getvalue()[:300])


@pytest.mark.parametrize("size", [(10_000, 10_000), (100_000, 100_000)])
def test_pixel_bomb_is_refused_from_the_header(size):
    # 100 Mpx is over our limit; 10 Gpx is over Pillow's own bomb limit too: both are clear errors.
    with pytest.raises(DigitlabError, match="megapixels|decompression bomb"):
        load_image(png_claiming_size(*size))
    assert size[0] * size[1] > MAX_PIXELS


def test_animated_gif_gives_first_frame():
    frames = [Image.new("L", (20, 20), v) for v in (10, 200, 90)]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    out = load_image(buf.getvalue())
    assert np.asarray(out.convert("L"))[5, 5] == 10


def test_multipage_tiff_gives_first_page():
    pages = [Image.new("L", (16, 16), v) for v in (30, 220)]
    buf = io.BytesIO()
    pages[0].save(buf, format="TIFF", save_all=True, append_images=pages[1:])
    assert np.asarray(load_image(buf.getvalue()))[0, 0] == 30


def test_exif_rotation_is_applied():
    img = Image.new("L", (40, 20), 255)  # stored landscape
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display": a phone held upright
    buf = io.BytesIO()
    img.save(buf, format="JPEG", exif=exif.tobytes())
    assert load_image(buf.getvalue()).size == (20, 40)


def _saved(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


@pytest.mark.parametrize("fmt", ALLOWED_FORMATS)
def test_every_allowed_format_decodes(fmt):
    img = Image.new("RGB", (24, 16), (200, 30, 30))
    out = load_image(_saved(img, fmt))
    assert out.size == (24, 16)
    assert np.abs(np.asarray(out.convert("RGB"), dtype=int)[8, 12] - (200, 30, 30)).max() <= 8  # JPEG/WebP: lossy


@pytest.mark.parametrize("fmt", ["ICO", "PCX", "TGA", "PPM", "DDS", "EPS"])
def test_other_formats_are_refused_whatever_they_are_called(tmp_path, fmt):
    # Pillow reads each of these; digitlab tries none of them (an EPS would start Ghostscript).
    data = _saved(Image.new("RGB", (16, 16), "white"), fmt) if fmt != "EPS" else b"%!PS-Adobe-3.0 EPSF-3.0\n"
    assert fmt not in ALLOWED_FORMATS
    path = tmp_path / "digit.png"  # a .png name (or an image/png upload) changes nothing
    path.write_bytes(data)
    with pytest.raises(DigitlabError, match="not an image digitlab reads"):
        load_image(path)


def test_eps_never_reaches_ghostscript(monkeypatch):
    from PIL import EpsImagePlugin

    called = []
    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", lambda *a, **k: called.append(a))
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n%%EOF\n"
    with pytest.raises(DigitlabError):
        decode_image(eps)
    assert called == []


def test_any_decoder_exception_is_a_digitlab_error(monkeypatch):
    # A corrupt file can make a decoder raise anything (a DDS can raise NotImplementedError).
    from PIL import ImageFile

    data = png_bytes(Image.new("L", (8, 8)))
    for exc in (NotImplementedError("no such pixel format"), KeyError("tag"), RuntimeError("decoder"), MemoryError()):

        def broken(self, exc=exc):
            raise exc

        monkeypatch.setattr(ImageFile.ImageFile, "load", broken)
        with pytest.raises(DigitlabError, match="corrupt|too large"):
            decode_image(data, "x.png")


def test_decode_image_applies_the_byte_limit(monkeypatch):
    import digitlab.inference.image as image

    monkeypatch.setattr(image, "MAX_BYTES", 100)
    with pytest.raises(DigitlabError, match="over the"):
        decode_image(png_bytes(Image.fromarray(np.random.default_rng(1).integers(0, 255, (32, 32), dtype=np.uint8))))
