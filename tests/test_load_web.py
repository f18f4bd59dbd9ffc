"""benchmarks/load_web.py's counting, on a tiny run against the real app with a stand-in model.

No timing is asserted: only that every request is counted once, as a success, an error
(by kind) or a misread, and that the requests are the page's.
"""

from __future__ import annotations

import asyncio
import base64
import importlib.util
import io
import json
import sys

import numpy as np
from PIL import Image

from conftest import REPO, Answer, StandIn, running
from digitlab.web.app import create_app


def _load_web():
    spec = importlib.util.spec_from_file_location("load_web", REPO / "benchmarks" / "load_web.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["load_web"] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


L = _load_web()


class AlwaysSeven(StandIn):
    def predict(self, image, top_k=3, multi=True, include_input=False):
        return Answer({"source": None, "status": "ok", "text": "7", "items": [], "error": None, "elapsed_ms": 1.0})


def test_canvas_png_is_what_a_browser_sends():
    digit = np.zeros((28, 28), dtype=np.uint8)
    digit[5:23, 12:16] = 255
    png = L.canvas_png(digit)
    img = Image.open(io.BytesIO(png))
    assert img.format == "PNG" and img.mode == "RGBA" and img.size == (96, 96)  # the page's small copy
    expected = np.asarray(Image.fromarray(digit).resize((280, 280), Image.BILINEAR).resize((96, 96), Image.BOX))
    pixels = np.asarray(img)
    assert np.array_equal(pixels[..., 0], expected) and (pixels[..., 3] == 255).all()
    body = json.loads(L.predict_body(png))
    assert body["include_input"] is True
    assert base64.b64decode(body["image"].removeprefix("data:image/png;base64,")) == png


def test_every_request_is_counted_once():
    png = L.canvas_png(np.zeros((28, 28), dtype=np.uint8))
    payloads = [
        (L.predict_body(png), "7"),
        (L.predict_body(png), "7"),
        (L.predict_body(png), "1"),
        (json.dumps({"image": "data:text/plain;base64,aGk="}).encode(), "7"),
    ]  # 415
    with running(create_app(AlwaysSeven())) as url:
        host, port = url.removeprefix("http://").split(":")
        stats, wall = asyncio.run(L.run_clients(host, int(port), payloads, clients=2, duration=30, max_requests=3))
    # client 0 sends payloads 0, 1, 2; client 1 starts half-way: 2, 3, 0
    assert [len(s.latencies_ms) for s in stats] == [3, 2]
    assert [s.errors for s in stats] == [[], ["415"]]
    assert [s.wrong for s in stats] == [1, 1]
    summary = L.summarize(stats, wall)
    assert summary["requests"] == 6 and summary["errors"] == 1 and summary["error_kinds"] == ["415"]
    assert summary["wrong_answers"] == 2 and summary["p50_ms"] > 0 and summary["server_p50_ms"] > 0


def test_bad_answers_are_errors():
    stats = L.ClientStats()
    L.check_answer(200, b"not json", "7", stats, 1.0)
    L.check_answer(200, b'{"status": "ok"}', "7", stats, 1.0)
    L.check_answer(503, b'{"error": "busy"}', "7", stats, 1.0)
    L.check_answer(200, b'{"text": "7", "elapsed_ms": 2}', "7", stats, 1.5)
    assert stats.errors == ["bad-json", "bad-json", "503"] and stats.latencies_ms == [1.5] and stats.wrong == 0
