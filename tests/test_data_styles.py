"""The styles augmentation's parts (data/styles.py): lines, the continental 1, the stretch to a box."""

from __future__ import annotations

import torch

from digitlab.data import styles
from digitlab.data.styles import _ink_box, _reframe, continental_one, segment_ink


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def bar(n: int, x0: int = 13, x1: int = 16) -> torch.Tensor:
    x = torch.zeros(n, 1, 28, 28)
    x[:, :, 4:24, x0:x1] = 255.0
    return x


def test_segment_ink_draws_a_line_of_the_given_width():
    ink = segment_ink(28, 28, torch.tensor([[5.0, 10.0]]), torch.tensor([[20.0, 10.0]]), torch.tensor([1.0]))
    assert ink.shape == (1, 1, 28, 28)
    assert ink[0, 0, 10, 12] == 255 and ink[0, 0, 11, 12] == 127.5  # an anti-aliased rim
    assert ink[0, 0, 12, 12] == 0 and ink[0, 0, 10, 23] == 0  # nothing beyond its width or its end


def test_ink_box():
    x0, x1, y0, y1 = _ink_box(bar(2))
    assert x0.tolist() == [13, 13] and x1.tolist() == [15, 15] and y0.tolist() == [4, 4] and y1.tolist() == [23, 23]
    empty = _ink_box(torch.zeros(1, 1, 28, 28))
    assert [v.item() for v in empty] == [0, 27, 0, 27]  # an empty image's box is the frame


def test_continental_one_adds_an_up_stroke_to_the_left_of_the_top():
    x = bar(64)
    out = continental_one(x, gen())
    assert (out >= x).all()  # the bar stays
    upper_left = out[:, 0, 4:16, :12].amax((1, 2))
    assert (upper_left > 128).all()  # every 1 gets its flag, down to the left of the top
    assert (out[:, 0, :19, 17:] == 0).all()  # nothing to the right above the foot
    feet = (out[:, 0, 21:25, :12] > 128).any(2).any(1)
    assert 0.2 < feet.float().mean() < 0.8  # a foot on about half of them


def test_reframe_to_a_square_widens_a_narrow_digit(monkeypatch):
    monkeypatch.setattr(styles, "FILL", 1.0)
    monkeypatch.setattr(styles, "SHEAR", 0.0)
    monkeypatch.setattr(styles, "ROTATE_DEG", 0.0)
    out = _reframe(bar(32, 10, 18), gen())  # 8 x 20: stretched to a square box
    x0, x1, y0, y1 = _ink_box(out)
    width, height = x1 - x0 + 1, y1 - y0 + 1
    assert (height >= 14).all() and (height <= 21).all()  # framed to BOX_PX on its longer side
    assert (width / height > 0.8).all()


def test_reframe_keeps_the_shape_when_the_ratio_is_kept(monkeypatch):
    for name in ("FILL", "ASPECT_LOG", "SHEAR", "ROTATE_DEG", "SHIFT_PX"):
        monkeypatch.setattr(styles, name, 0.0)
    monkeypatch.setattr(styles, "BOX_PX", (20.0, 20.0))
    out = _reframe(bar(4, 10, 18), gen())  # 8 x 20 already: only re-centred
    x0, x1, y0, y1 = _ink_box(out)
    assert (x1 - x0 + 1).tolist() == [8.0] * 4 and (y1 - y0 + 1).tolist() == [20.0] * 4
