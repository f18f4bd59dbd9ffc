"""Fuzzing image decoding: any bytes are a DigitlabError or an image that reads to a valid answer.

Seeds are small valid files in every allowed format; hypothesis flips, inserts and cuts bytes
(seeded, bounded in examples and time). Accepted images go on through the shipped model, whose
answer must be well formed. Memory stays within a bound. ``slow`` runs the long campaign.
"""

from __future__ import annotations

import io
import math
import resource

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from digitlab.errors import DigitlabError
from digitlab.inference.image import ALLOWED_FORMATS, decode_image
from digitlab.inference.predictor import Predictor

MEMORY_BOUND_MB = 500  # the hardening target for any input under 10 MB
SHORT = settings(
    max_examples=60,
    deadline=5000,  # ms per input; a decode and a prediction take a few ms
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
LONG = settings(SHORT, max_examples=3000)
PREDICTOR = Predictor.load()


def _seed(fmt: str) -> bytes:
    rng = np.random.default_rng(0)
    arr = np.zeros((24, 32), np.uint8)
    arr[4:20, 14:18] = 255  # a "1"
    arr = np.clip(arr.astype(int) + rng.integers(0, 30, arr.shape), 0, 255).astype(np.uint8)
    img = Image.fromarray(arr).convert("RGB" if fmt in ("JPEG", "WEBP") else "L")
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


SEEDS = {fmt: _seed(fmt) for fmt in ALLOWED_FORMATS}


@st.composite
def mutated_images(draw) -> bytes:
    data = bytearray(SEEDS[draw(st.sampled_from(ALLOWED_FORMATS))])
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["flip", "insert", "cut", "grow"]))
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if kind == "flip" and data:
            data[at] = draw(st.integers(0, 255))
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "cut":
            del data[at : at + draw(st.integers(1, 64))]
        else:  # a header field set to a large value: sizes, counts, offsets
            data[at : at + 4] = draw(st.sampled_from([b"\xff\xff\xff\xff", b"\x7f\xff\xff\xff", b"\x00\x00\x00\x00"]))
    return bytes(data)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def check(data: bytes) -> str:
    """'error' or 'accepted'; anything else (another exception, a bad answer) fails the test."""
    start = peak_rss_mb()
    try:
        image = decode_image(data, "fuzz")
    except DigitlabError as exc:
        assert str(exc) and "\n" not in str(exc)
        return "error"
    assert image.size[0] * image.size[1] > 0
    pred = PREDICTOR.predict(image)
    assert pred.status in ("ok", "uncertain", "empty", "error"), pred
    for item in pred.items:
        assert all(math.isfinite(p) for p in item.probs) and sum(item.probs) == pytest.approx(1, abs=1e-4)
    assert peak_rss_mb() - start < MEMORY_BOUND_MB
    return "accepted"


def test_the_seeds_decode():
    assert all(check(data) == "accepted" for data in SEEDS.values())


@SHORT
@given(data=mutated_images())
def test_a_mutated_image_is_an_error_or_a_valid_answer(data):
    check(data)


@SHORT
@given(
    prefix=st.sampled_from([b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF89a", b"BM", b"II*\x00", b"RIFF"]),
    rest=st.binary(max_size=2048),
)
def test_random_bytes_behind_a_format_signature(prefix, rest):
    check(prefix + rest)


@pytest.mark.slow
@LONG
@given(data=mutated_images())
def test_long_campaign_mutated_images(data):
    check(data)
