"""A sheet photographed on a desk (digitlab.inference.surround): the desk is not the paper."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from digitlab.inference import preprocess as P
from digitlab.inference import surround as S

MEAN, STD = (0.1307,), (0.3081,)


def on_desk(size=300, margin=50, desk=60, paper=235) -> Image.Image:
    """A 7 written on a sheet lying on a dark table that fills the picture's frame."""
    img = Image.new("L", (size, size), desk)
    d = ImageDraw.Draw(img)
    d.rectangle((margin, margin, size - margin, size - margin), fill=paper)
    d.line([(120, 100), (190, 100), (140, 210)], fill=20, width=12)
    return img


def gray_of(img: Image.Image) -> np.ndarray:
    return np.asarray(img, dtype=np.float32) / 255.0


def test_the_desk_is_painted_the_paper_colour():
    out = S.paper_on_desk(gray_of(on_desk()))
    assert out is not None
    assert abs(float(out[5, 5]) - 235 / 255) < 0.02  # the desk, now paper
    assert float(out[100, 150]) < 0.2  # the 7's bar is still ink


def test_a_sheet_on_a_desk_is_read_as_dark_ink_on_paper():
    r = P.preprocess_digits(on_desk(), mean=MEAN, std=STD)
    assert r.light_background and len(r.digits) == 1
    left, top, right, bottom = r.digits[0].box
    assert 100 <= left and right <= 205 and 85 <= top and bottom <= 225  # the 7, not the sheet


def test_light_ink_on_a_dark_ground_is_no_desk():
    """A bold white 0 on black, a white 7, the plain sheet without a desk, and a small picture."""
    zero = Image.new("L", (280, 280), 0)
    ImageDraw.Draw(zero).ellipse((70, 40, 210, 240), outline=255, width=40)
    seven = Image.new("L", (280, 280), 0)
    ImageDraw.Draw(seven).line([(80, 60), (200, 60), (110, 230)], fill=255, width=30)
    for img in (zero, seven):
        assert S.paper_on_desk(gray_of(img)) is None
        assert not P.preprocess_digits(img, mean=MEAN, std=STD).light_background
    sheet = on_desk().crop((50, 50, 250, 250))
    assert S.paper_on_desk(gray_of(sheet)) is None
    small = on_desk().resize((90, 90))
    assert S.paper_on_desk(gray_of(small)) is None and S.paper_on_desk(gray_of(small), side=300) is not None
