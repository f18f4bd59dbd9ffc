"""Batches, normalisation and augmentation on whole tensors (data/loader.py)."""

from __future__ import annotations

import pytest
import torch

from digitlab.data import load_dataset
from digitlab.data.loader import (
    alternating_flip,
    augment,
    batch_indices,
    default_augment,
    iterate_batches,
    normalize,
    translate,
)
from digitlab.errors import DigitlabError


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def dots(n: int = 64, size: int = 28) -> torch.Tensor:
    """One bright pixel per image at (10, 12): shifts are easy to read off."""
    x = torch.zeros(n, 1, size, size, dtype=torch.uint8)
    x[:, 0, 10, 12] = 200
    return x


def test_iterate_batches_covers_everything_once():
    x = torch.arange(10).view(10, 1, 1, 1).to(torch.uint8)
    y = torch.arange(10)
    seen = []
    for xb, yb in iterate_batches(x, y, 4, shuffle=True, generator=gen()):
        assert torch.equal(xb.view(-1).long(), yb)  # pairs stay together
        seen += yb.tolist()
    assert sorted(seen) == list(range(10)) and seen != list(range(10))
    sizes = [len(b[1]) for b in iterate_batches(x, y, 4, shuffle=True, generator=gen(), drop_last=True)]
    assert sizes == [4, 4]
    plain = [b[1].tolist() for b in iterate_batches(x, y, 4, shuffle=False)]
    assert plain == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def test_iterate_batches_is_deterministic():
    x, y = torch.zeros(50, 1, 2, 2, dtype=torch.uint8), torch.arange(50)
    a = [b[1] for b in iterate_batches(x, y, 8, shuffle=True, generator=gen(3))]
    b = [b[1] for b in iterate_batches(x, y, 8, shuffle=True, generator=gen(3))]
    assert all(torch.equal(p, q) for p, q in zip(a, b, strict=True))


def test_normalize_matches_reference():
    x = torch.randint(0, 256, (4, 3, 5, 5), dtype=torch.uint8)
    mean, std = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
    ref = (x.float() / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    out = normalize(x, mean, std)
    assert out.dtype == torch.float32 and torch.allclose(out, ref, atol=1e-5)
    assert normalize(x[0], mean, std).shape == (3, 5, 5)  # a single image works too
    assert normalize(x[:, :1], (0.5,), (0.5,), dtype=torch.float64).dtype == torch.float64


def test_translate_moves_pixels():
    x = dots(3)
    out = translate(x, torch.tensor([1, -2, 0]), torch.tensor([2, 0, -1]), pad=2)
    assert out[0, 0, 11, 14] == 200 and out[1, 0, 8, 12] == 200 and out[2, 0, 10, 11] == 200
    assert int((out > 0).sum()) == 3


def test_shift_is_a_true_translation():
    x = dots()
    out = augment(x, "shift", gen())
    assert out.dtype == torch.uint8 and out.shape == x.shape
    for img in out[:, 0]:
        ((r, c),) = (img == 200).nonzero().tolist()  # exactly one bright pixel, moved
        assert abs(r - 10) <= 2 and abs(c - 12) <= 2
        assert int((img > 0).sum()) == 1
    moved = [(img == 200).nonzero()[0].tolist() for img in out[:, 0]]
    assert len({tuple(m) for m in moved}) > 5  # different shifts per image


def test_shift_on_real_digits_keeps_content():
    x = torch.zeros(8, 1, 28, 28, dtype=torch.uint8)
    x[:, :, 8:20, 12:16] = 255  # a "1" in the middle: never pushed off the frame
    out = augment(x, "shift", gen(1))
    assert torch.equal(out.sum(dim=(1, 2, 3)), x.sum(dim=(1, 2, 3)))


def test_shift_scales_down_for_tiny_images():
    x = torch.zeros(200, 1, 8, 8, dtype=torch.uint8)
    x[:, 0, 4, 4] = 200
    out = augment(x, "shift", gen())
    rows = (out[:, 0] == 200).nonzero()[:, 1]
    assert rows.min() >= 3 and rows.max() <= 5  # +-1 px at 8x8


def test_crop_flip():
    x = torch.randint(0, 256, (256, 3, 32, 32), dtype=torch.uint8)
    out = augment(x, "crop-flip", gen())
    assert out.shape == x.shape and out.dtype == torch.uint8
    single = torch.zeros(256, 3, 32, 32, dtype=torch.uint8)
    single[:, :, 16, 3] = 77
    cols = (augment(single, "crop-flip", gen())[:, 0] == 77).nonzero()
    cols = cols[:, 2]
    assert cols.min() >= 0 and (cols <= 7).any() and (cols >= 24).any()  # some flipped to the right side
    assert len(cols) <= 256  # pushed off the frame at most, never duplicated


def test_flip_translate_moves_by_two_with_mirrored_borders():
    single = torch.zeros(512, 3, 32, 32, dtype=torch.uint8)
    single[:, :, 16, 3] = 77
    out = augment(single, "flip-translate", gen())
    assert out.shape == single.shape and out.dtype == torch.uint8
    hits = (out[:, 0] == 77).nonzero()  # (k, 3): image, row, column
    rows, cols = hits[:, 1], hits[:, 2]
    assert rows.min() >= 14 and rows.max() <= 18
    assert set(cols.tolist()) <= {1, 2, 3, 4, 5, 26, 27, 28, 29, 30}  # +-2 px, or mirrored: 31 - 3 +-2
    assert (cols <= 5).any() and (cols >= 26).any()
    flat = torch.full((8, 3, 32, 32), 9, dtype=torch.uint8)  # mirrored borders: no zeros come in
    assert torch.equal(augment(flat, "flip-translate", gen()), flat)
    x = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    moved = translate(x, torch.tensor([1, -2]), torch.tensor([2, 0]), 2, mode="reflect")
    assert torch.equal(moved[0, :, 1:, 2:], x[0, :, :-1, :-2])  # down 1, right 2
    assert torch.equal(moved[0, :, 0, 2:], x[0, :, 1, :-2])  # the new top row mirrors the second row
    assert torch.equal(moved[0, :, 1:, :2], x[0, :, :-1, 1:3].flip(-1))  # the new left columns mirror 2, 1
    assert torch.equal(moved[1, :, :-2], x[1, :, 2:]) and torch.equal(moved[1, :, -2:], x[1, :, -3:-1].flip(-2))


def test_batch_indices_are_a_permutation_in_batches():
    batches = list(batch_indices(10, 4, generator=gen(1)))
    assert [len(b) for b in batches] == [4, 4, 2]
    flat = torch.cat(batches)
    assert sorted(flat.tolist()) == list(range(10)) and flat.tolist() != list(range(10))
    assert [len(b) for b in batch_indices(10, 4, generator=gen(1), drop_last=True)] == [4, 4]
    with pytest.raises(ValueError, match="positive"):
        next(batch_indices(10, 0))


def test_alternating_flip_mirrors_each_image_both_ways_in_two_epochs():
    index = torch.arange(20000)
    even, odd = alternating_flip(index, 0, seed=0), alternating_flip(index, 1, seed=0)
    assert even.dtype == torch.bool and torch.equal(odd, ~even)  # every image changes side each epoch
    assert torch.equal(alternating_flip(index, 2, seed=0), even)  # a fixed coin per image
    assert 0.48 < even.float().mean() < 0.52  # half the images start mirrored
    assert 0.48 < (even[1:] == even[:-1]).float().mean() < 0.52  # neighbours' coins are unrelated
    assert 0.45 < (alternating_flip(index, 0, seed=1) == even).float().mean() < 0.55  # the seed redraws them
    assert torch.equal(alternating_flip(index[[7, 3]], 0, seed=0), even[[7, 3]])  # by index, not by position


def test_flip_translate_follows_a_given_mirror_mask():
    single = torch.zeros(64, 3, 32, 32, dtype=torch.uint8)
    single[:, :, 16, 3] = 77
    flip = torch.arange(64) % 2 == 1
    cols = (augment(single, "flip-translate", gen(), flip=flip)[:, 0] == 77).nonzero()[:, [0, 2]]
    mirrored = flip[cols[:, 0]]
    assert (cols[mirrored, 1] >= 26).all() and (cols[~mirrored, 1] <= 5).all()


def test_robust_keeps_ink_roughly():
    x = torch.zeros(256, 1, 28, 28, dtype=torch.uint8)
    x[:, :, 6:22, 12:15] = 255  # a thick vertical stroke
    x[:, :, 6:9, 9:15] = 255
    out = augment(x, "robust", gen())
    assert out.dtype == torch.uint8 and out.shape == x.shape
    ratio = out.float().sum(dim=(1, 2, 3)) / x.float().sum(dim=(1, 2, 3))
    assert 0.6 < ratio.mean() < 1.6
    assert (ratio > 0.2).all()  # no digit disappears
    assert not torch.equal(out[0], out[1])


def test_determinism_with_seed():
    x = torch.randint(0, 256, (32, 1, 28, 28), dtype=torch.uint8)
    for kind in ("shift", "crop-flip", "robust", "styles"):
        assert torch.equal(augment(x, kind, gen(5)), augment(x, kind, gen(5)))
        assert not torch.equal(augment(x, kind, gen(5)), augment(x, kind, gen(6)))
    assert augment(x, "none", gen()) is x


def bars(n: int = 256) -> torch.Tensor:
    """A narrow upright bar per image (a bare 1), centred: a shift alone keeps all its ink."""
    x = torch.zeros(n, 1, 28, 28, dtype=torch.uint8)
    x[:, :, 4:24, 13:16] = 255
    return x


def test_styles_shapes_labels_and_half_the_batch_styled():
    x, labels = bars(), torch.arange(256) % 10
    before = labels.clone()
    out = augment(x, "styles", gen(), labels=labels)
    assert out.dtype == torch.uint8 and out.shape == x.shape
    assert torch.equal(labels, before)  # labels are read, never changed
    ink = out.float().sum(dim=(1, 2, 3)) / x.float().sum(dim=(1, 2, 3))
    assert (ink > 0.2).all()  # no digit disappears
    styled = (ink - 1).abs() > 0.05  # a shift keeps the bar's ink; width, stretch and bitmaps change it
    assert 0.3 < styled.float().mean() < 0.7  # STYLE_FRACTION of the batch, give or take
    shapes = {tuple(img.nonzero().amax(0).tolist()) for img in out[styled, 0]}
    assert len(shapes) > 20  # each styled image its own draw


def test_styles_widens_narrow_digits_somewhere():
    out = augment(bars(), "styles", gen(2), labels=torch.zeros(256, dtype=torch.long))
    cols = (out[:, 0] > 128).any(1).sum(1)  # ink columns per image: the bar has 3
    assert cols.max() >= 9  # stretched or bolder (a frame-filling 1)
    assert (cols == 3).float().mean() > 0.3  # the unstyled half keeps its width


def test_styles_needs_one_channel_and_matching_labels():
    with pytest.raises(DigitlabError, match="one-channel"):
        augment(torch.zeros(4, 3, 28, 28, dtype=torch.uint8), "styles", gen())
    with pytest.raises(ValueError, match="3 labels for 4 images"):
        augment(torch.zeros(4, 1, 28, 28, dtype=torch.uint8), "styles", gen(), labels=torch.zeros(3))


def test_unknown_augmentation():
    with pytest.raises(DigitlabError, match="unknown augmentation 'blur'.*crop-flip"):
        augment(dots(1), "blur", gen())


def test_default_augment():
    assert default_augment("mnist") == "shift" and default_augment("digits") == "none"
    assert default_augment("cifar10") == "crop-flip"
    assert default_augment("fashion-mnist") == "none" and default_augment("/some/folder") == "none"


def test_shift_on_real_mnist_keeps_digits(mnist_dir, isolated_data_env):
    """All 60,000 training digits shifted as one batch: each keeps nearly all its ink (MNIST's margin).

    (How fast this runs is measured by `digitlab bench`, not asserted here.)
    """
    data = load_dataset("mnist", mnist_dir, download=False)
    out = augment(data.train_x, "shift", gen())
    assert out.dtype == torch.uint8 and out.shape == data.train_x.shape
    kept = out.float().sum(dim=(1, 2, 3)) / data.train_x.float().sum(dim=(1, 2, 3))
    assert kept.min() > 0.85 and (kept > 0.95).float().mean() > 0.99
    assert (out != data.train_x).any(dim=(1, 2, 3)).float().mean() > 0.9  # most digits moved
