"""Fuzzing the web API: any request is answered 200 with a schema-valid body or a JSON 4xx, never 500.

Bodies (mutated PNGs, random bytes, JSON with odd fields), content types and query strings are
drawn by hypothesis (seeded, bounded in examples and time) and sent to the app with the shipped
model. Memory stays within a bound. ``slow`` runs the long campaign.
"""

from __future__ import annotations

import base64
import io
import json
import resource

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from digitlab.inference.predictor import Predictor
from digitlab.web.app import create_app
from digitlab.web.schemas import PredictResponse

MEMORY_BOUND_MB = 500
SHORT = settings(
    max_examples=60,
    deadline=10000,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
)
LONG = settings(SHORT, max_examples=2000)
CLIENT = TestClient(create_app(Predictor.load()), raise_server_exceptions=False)


def _png() -> bytes:
    img = Image.new("L", (40, 40))
    img.paste(255, (18, 6, 23, 34))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


PNG = _png()
TYPES = ["image/png", "image/jpeg", "image/gif", "image/webp", "image/x-icon", "application/json", "text/plain", ""]


@st.composite
def bodies(draw) -> bytes:
    kind = draw(st.sampled_from(["png", "mutated", "random", "json"]))
    if kind == "png":
        return PNG
    if kind == "mutated":
        data = bytearray(PNG)
        for _ in range(draw(st.integers(1, 5))):
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
        return bytes(data)
    if kind == "random":
        return draw(st.binary(max_size=1024))
    image = draw(
        st.one_of(
            st.just("data:image/png;base64," + base64.b64encode(PNG).decode()),
            st.text(max_size=64),
            st.integers(),
            st.none(),
            st.lists(st.integers(), max_size=3),
        )
    )
    doc = {"image": image, "top_k": draw(st.one_of(st.integers(-3, 20), st.text(max_size=3), st.none()))}
    doc["include_input"] = draw(st.one_of(st.booleans(), st.integers(), st.text(max_size=3)))
    return json.dumps(doc).encode()


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def send(body: bytes, ctype: str, top_k: str, multipart: bool) -> int:
    start = peak_rss_mb()
    if multipart:
        r = CLIENT.post(f"/api/predict?top_k={top_k}", files={"file": ("x.png", body, ctype or "image/png")})
    else:
        r = CLIENT.post(f"/api/predict?top_k={top_k}", content=body, headers={"Content-Type": ctype})
    assert r.headers["content-type"].startswith("application/json"), r.text
    if r.status_code == 200:
        PredictResponse.model_validate(r.json())  # the schema holds: no null or NaN where a number belongs
    else:
        assert r.status_code in (400, 413, 415, 422), (r.status_code, r.text)
        assert set(r.json()) == {"error"} and r.json()["error"]
    assert peak_rss_mb() - start < MEMORY_BOUND_MB
    return r.status_code


request_args = {
    "body": bodies(),
    "ctype": st.sampled_from(TYPES),
    "top_k": st.sampled_from(["3", "1", "10", "0", "11", "-1", "x", ""]),
    "multipart": st.booleans(),
}


@SHORT
@given(**request_args)
def test_any_request_is_answered_without_a_500(body, ctype, top_k, multipart):
    send(body, ctype, top_k, multipart)


@pytest.mark.slow
@LONG
@given(**request_args)
def test_long_campaign_requests(body, ctype, top_k, multipart):
    send(body, ctype, top_k, multipart)
