"""The realistic-handwriting generator (digitlab.data.synth)."""

from __future__ import annotations

import numpy as np
import pytest

from digitlab.data import synth


@pytest.fixture(scope="module")
def digits():
    rng = np.random.default_rng(0)
    x = np.zeros((5, 28, 28), dtype=np.uint8)
    for i in range(5):  # blocky fake digits: a vertical bar plus a random bar
        x[i, 4:24, 12:16] = 255
        r = int(rng.integers(4, 20))
        x[i, r : r + 3, 6:22] = 255
    return x, np.arange(5)


@pytest.mark.parametrize("kind", synth.KINDS)
def test_generate_is_deterministic(tmp_path, digits, kind):
    x, y = digits
    m1 = synth.generate(tmp_path / "a", x, y, kind=kind, count=4, seed=3)
    m2 = synth.generate(tmp_path / "b", x, y, kind=kind, count=4, seed=3)
    rows1, rows2 = synth.read_manifest(m1), synth.read_manifest(m2)
    assert len(rows1) == 4
    for (f1, l1), (f2, l2) in zip(rows1, rows2, strict=True):
        assert l1 == l2 and f1.read_bytes() == f2.read_bytes()


def test_sample_i_does_not_depend_on_count(digits):
    x, y = digits
    a = synth.make_sample("photo", x, y, seed=1, i=2)
    b = synth.make_sample("photo", x, y, seed=1, i=2)
    assert np.array_equal(np.asarray(a.image), np.asarray(b.image))


def test_kinds_look_as_promised(digits):
    x, y = digits
    photo = synth.make_sample("photo", x, y, 0, 0)
    assert photo.image.mode == "RGB" and 200 <= min(photo.image.size) and max(photo.image.size) <= 400
    assert np.asarray(photo.image).mean() > 100  # light paper
    modes = {synth.make_sample("canvas", x, y, 0, i).image.mode for i in range(12)}
    assert modes == {"RGB", "RGBA"}
    number = synth.make_sample("number", x, y, 0, 0)
    assert 2 <= len(number.label) <= 5 and number.image.size[0] > number.image.size[1]


def test_sheets_show_every_setting_and_name_it(tmp_path, digits):
    """A ``sheet`` is a light page photo; its setting (ruled, box, desk, shadow, ...) ends the file name."""
    x, y = digits
    samples = [synth.make_sample("sheet", x, y, 0, i) for i in range(60)]
    assert {s.setting for s in samples} == set(synth.SETTINGS)
    for s in samples:
        assert s.image.mode == "RGB" and 220 <= min(s.image.size) and max(s.image.size) <= 400
    desk = next(s for s in samples if s.setting == "desk")
    a = np.asarray(desk.image.convert("L"), dtype=np.float32)
    assert a[:3].mean() < 0.7 * a[a.shape[0] // 2 - 5 : a.shape[0] // 2 + 5].max()  # the desk is darker than the paper
    rows = synth.read_manifest(synth.generate(tmp_path, x, y, kind="sheet", count=6, seed=0))
    assert [f.stem.rsplit("_", 1)[1] for f, _ in rows] == [s.setting for s in samples[:6]]


def test_unknown_kind(digits):
    with pytest.raises(ValueError):
        synth.make_sample("sketch", *digits, 0, 0)


def test_a_set_uses_each_digit_once():
    """Image i takes test digit order[i]: a set of n images shows n different digits."""
    x = np.zeros((50, 28, 28), dtype=np.uint8)
    for i in range(50):
        x[i, 4:24, 4 + i % 20 : 8 + i % 20] = 255  # a bar at a different place per digit
        x[i, 4 + i // 20, 4:24] = 255
    labels = np.arange(50) % 10
    seen = {np.asarray(synth.make_sample("photo", x, labels, 0, i).image).tobytes() for i in range(50)}
    assert len(seen) == 50
    order = np.random.default_rng([0, synth.KINDS.index("photo")]).permutation(50)
    assert sorted(order.tolist()) == list(range(50))


def test_filled_loop_is_drawn_as_a_loop():
    """A thick pen fills the loop of a 9; a thin canvas brush draws it open again."""
    mask = np.zeros((200, 140), dtype=bool)
    yy, xx = np.mgrid[0:200, 0:140]
    mask |= (yy - 55) ** 2 + (xx - 70) ** 2 < 45**2  # the filled loop
    mask[50:195, 100:118] = True  # the stem, ~18 px wide like the rest of the strokes
    mask[20:40, 30:110] = True  # a stroke over the top, so the typical stroke is thin
    dist = synth.ndi.distance_transform_edt(mask)
    opened = synth._open_blobs(mask, dist, synth._thin(mask))
    _, holes = synth.ndi.label(synth.ndi.binary_fill_holes(opened) & ~opened)
    assert holes == 1 and opened[55, 70] == 0 and opened[150, 109]  # the core is cut out, the stem stays


def test_marker_digits_keep_their_strokes():
    """Strokes far thicker than MNIST's usual are drawn as they are, not thinned to another shape."""
    ink = np.zeros((200, 120), dtype=np.float32)
    ink[20:180, 30:90] = 1.0  # a very thick '1': 60 px wide, 160 tall
    out = synth._brush(ink, radius=2.0)
    assert out.shape[0] >= 200 and (out > 0.5).sum() > 0.8 * ink.sum()  # not a 4 px hairline


def test_pen_keeps_a_faint_stroke():
    """A pen does not fade: a faint part of an MNIST digit stays connected to the rest."""
    ink = np.zeros((100, 100), dtype=np.float32)
    ink[10:90, 45:55] = 1.0  # a strong stem
    ink[10:20, 10:45] = 0.35  # a faint bar joined to it
    rng = np.random.default_rng(0)
    for _ in range(10):
        pen = synth._pen(ink, rng)
        assert synth._pieces(pen > 0.5) == 1 and pen[15, 20] > 0.5
