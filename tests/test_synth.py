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
    for (f1, l1), (f2, l2) in zip(rows1, rows2):
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


def test_unknown_kind(digits):
    with pytest.raises(ValueError):
        synth.make_sample("sketch", *digits, 0, 0)
