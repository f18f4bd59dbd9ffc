"""Splitting ink into digits (digitlab.inference.segment) on masks the tests draw."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from digitlab.inference import segment as S


def mask_of(draw_fn, size=(600, 200)) -> np.ndarray:
    img = Image.new("L", size, 0)
    draw_fn(ImageDraw.Draw(img))
    return np.asarray(img) > 127


def test_blank_mask_has_no_digits():
    assert S.segment_digits(np.zeros((50, 50), dtype=bool)) == []


def test_specks_are_dropped():
    m = mask_of(lambda d: d.line([(100, 30), (100, 170)], fill=255, width=10))
    m[5, 5] = m[190, 500] = True  # single-pixel dust
    m[150:153, 400:403] = True
    segs = S.segment_digits(m)
    assert len(segs) == 1 and segs[0].box[0] >= 90


def test_row_of_digits_left_to_right():
    def draw(d):
        d.ellipse((300, 30, 380, 170), outline=255, width=10)  # 0, drawn first
        d.line([(100, 30), (100, 170)], fill=255, width=10)  # 1
        d.line([(450, 30), (530, 30), (470, 170)], fill=255, width=10)  # 7

    segs = S.segment_digits(mask_of(draw))
    assert len(segs) == 3
    assert [s.box[0] for s in segs] == sorted(s.box[0] for s in segs)


def test_broken_five_is_merged():
    def draw(d):  # a 5 whose top bar was written separately, with a gap
        d.line([(110, 30), (180, 30)], fill=255, width=8)
        d.line([(110, 45), (105, 95)], fill=255, width=8)
        d.arc((95, 80, 185, 170), start=-100, end=150, fill=255, width=8)

    segs = S.segment_digits(mask_of(draw))
    assert len(segs) == 1


def test_stray_mark_is_dropped():
    def draw(d):
        d.line([(100, 30), (100, 170)], fill=255, width=10)
        d.line([(250, 30), (250, 170)], fill=255, width=10)
        d.ellipse((400, 150, 408, 158), fill=255)  # a dot, far below the digits' tops

    assert len(S.segment_digits(mask_of(draw))) == 2


def test_touching_digits_are_split_at_the_valley():
    def draw(d):  # "77" joined by a hairline: one component, wider than one digit
        d.line([(100, 30), (180, 30), (120, 170)], fill=255, width=12)
        d.line([(210, 30), (290, 30), (230, 170)], fill=255, width=12)
        d.line([(180, 30), (210, 30)], fill=255, width=2)

    m = mask_of(draw)
    assert len(S.components(m)) == 1
    segs = S.segment_digits(m)
    assert len(segs) == 2


def test_wide_zero_is_not_cut_through_its_loop():
    m = mask_of(lambda d: d.ellipse((100, 40, 330, 160), outline=255, width=10))
    segs = S.segment_digits(m)
    assert len(segs) == 1
    assert segs[0].alternatives == []  # every cut would cross the hole


def test_wide_part_offers_a_two_digit_reading():
    def draw(d):  # two strokes touching along their length: no empty column, but wide
        d.line([(100, 30), (150, 170)], fill=255, width=14)
        d.line([(150, 170), (150, 30), (230, 30), (200, 170)], fill=255, width=14)

    segs = S.segment_digits(mask_of(draw))
    assert len(segs) == 1 and 1 <= len(segs[0].alternatives) <= S.CUT_CANDIDATES
    cuts = [pieces[0].box[2] for pieces in segs[0].alternatives]
    assert all(len(p) == 2 for p in segs[0].alternatives) and len(set(cuts)) == len(cuts)
    for a, b in segs[0].alternatives:  # the two pieces cover the segment's ink between them
        assert a.mask.sum() + b.mask.sum() == segs[0].mask.sum()


def test_single_mode_takes_all_ink():
    def draw(d):
        d.line([(100, 30), (100, 170)], fill=255, width=10)
        d.line([(250, 30), (250, 170)], fill=255, width=10)

    segs = S.segment_digits(mask_of(draw), multi=False)
    assert len(segs) == 1 and segs[0].width > 150


def test_open_zero_halves_offer_a_join():
    def draw(d):  # a 0 written as ( and ) that do not meet: two components side by side
        d.arc((200, 30, 330, 170), 100, 260, fill=255, width=10)
        d.arc((200, 30, 330, 170), 280, 80, fill=255, width=10)

    segs = S.segment_digits(mask_of(draw))
    assert len(segs) == 2
    joined = segs[0].merged_with_next
    assert joined is not None and segs[1].merged_with_next is None
    assert joined.mask.sum() == segs[0].mask.sum() + segs[1].mask.sum()
    assert joined.box == (segs[0].box[0], min(s.box[1] for s in segs), segs[1].box[2], max(s.box[3] for s in segs))


def test_digits_far_apart_offer_no_join():
    def draw(d):
        d.line([(100, 30), (100, 170)], fill=255, width=10)
        d.ellipse((300, 30, 400, 170), outline=255, width=10)

    segs = S.segment_digits(mask_of(draw))
    assert len(segs) == 2 and all(s.merged_with_next is None for s in segs)


def test_a_box_around_a_digit_is_dropped():
    """A form's box (or a frame drawn around the digit) is not part of the digit."""

    def draw(d):
        d.rectangle((200, 10, 400, 190), outline=255, width=4)
        d.line([(260, 40), (340, 40), (280, 160)], fill=255, width=10)  # a 7 inside

    segs = S.segment_digits(mask_of(draw))
    assert len(segs) == 1 and segs[0].box[0] >= 250 and segs[0].box[2] <= 350
    one = S.segment_digits(mask_of(draw), multi=False)
    assert len(one) == 1 and one[0].box[0] >= 250


def test_a_three_sided_frame_around_a_number_is_dropped():
    def draw(d):
        d.line([(580, 10), (100, 10), (100, 190), (580, 190)], fill=255, width=3)  # open on the right
        d.line([(200, 40), (200, 160)], fill=255, width=10)  # 1
        d.ellipse((300, 40, 380, 160), outline=255, width=10)  # 0

    segs = S.segment_digits(mask_of(draw))
    assert len(segs) == 2 and all(s.box[1] >= 30 for s in segs)


def test_a_lone_box_is_a_zero_and_a_loop_around_a_mark_is_kept():
    """Only a hollow mark with another mark inside is a frame: a square 0 stays, so does a 6 whose
    loop was written apart from its stem."""
    square = S.segment_digits(mask_of(lambda d: d.rectangle((250, 30, 350, 170), outline=255, width=10)))
    assert len(square) == 1

    def six(d):
        d.arc((250, 20, 350, 200), 90, 300, fill=255, width=10)  # the stem: a long open curve
        d.ellipse((275, 110, 335, 180), outline=255, width=10)  # the loop, inside the stem's box

    segs = S.segment_digits(mask_of(six))
    assert len(segs) == 1 and segs[0].box[0] <= 255  # the stem is part of the digit
