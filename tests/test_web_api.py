"""The web API (digitlab.web.app) through FastAPI's TestClient.

Answers come from the real shipped model on MNIST test digits rendered the way users send
them; limits, the worker pool and error handling also use a stand-in predictor, so they
can be driven exactly (a prediction that blocks, one that crashes).
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from conftest import Answer, StandIn, first_of, paper_row, photo, png
from digitlab.cli import main
from digitlab.inference.image import load_image
from digitlab.inference.predictor import Predictor
from digitlab.web.app import MAX_BODY_BYTES, create_app

TRACEBACK = re.compile(r"Traceback|File \"|line \d+, in ")


# ---- images like the ones users send ------------------------------------------------------


def data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def canvas_drawing(digit: np.ndarray) -> Image.Image:
    """A 28x28 MNIST digit as the page's canvas sends it: 280x280, white strokes on black."""
    return Image.fromarray(digit).resize((280, 280), Image.BILINEAR)


@pytest.fixture(scope="module")
def predictor():
    return Predictor.load()  # the shipped default model


@pytest.fixture(scope="module")
def client(predictor):
    with TestClient(create_app(predictor)) as c:
        yield c


# ---- a stand-in predictor for limits, the pool and crashes ---------------------------------


class DiesOn13x13:
    """A stand-in whose process dies on a 13x13 image (as a crash in native code would)."""

    info = StandIn.info

    def predict(self, image, top_k=3, multi=True, include_input=False):
        if image.size == (13, 13):
            os._exit(1)
        return Answer({"source": None, "status": "empty", "text": None, "items": [], "error": None, "elapsed_ms": 0.0})


def assert_json_error(response, status: int) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"} and body["error"], body
    assert not TRACEBACK.search(response.text), response.text
    return body["error"]


# ---- the page and the small routes ---------------------------------------------------------


def test_page_is_served_from_the_package_and_loads_nothing_from_elsewhere(client):
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    for element in ('id="canvas"', 'id="result-label"', 'id="clear"', 'id="undo"', 'id="file"', 'id="pen-width"'):
        assert element in r.text
    assert "default-src 'self'" in r.headers["content-security-policy"]
    for asset in ("/static/app.js", "/static/style.css"):
        a = client.get(asset)
        assert a.status_code == 200 and len(a.text) > 500
        assert not re.search(r"https?://", a.text), f"{asset} refers to another origin"
    assert not re.search(r"(src|href)=\"(https?:)?//", r.text)


def test_no_cross_origin_access(client):
    r = client.options(
        "/api/predict", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
    )
    assert "access-control-allow-origin" not in r.headers
    r = client.get("/api/model", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in r.headers


def test_model_info_and_health(client, predictor):
    info = client.get("/api/model").json()
    assert info["name"] == predictor.info["name"]
    assert info["classes"] == [str(i) for i in range(10)] and info["task"] == "digits"
    assert info["image_size"] == 28 and info["channels"] == 1
    assert info["accuracy"] is None or 0.9 < info["accuracy"] <= 100
    assert info["limits"]["max_body_bytes"] == MAX_BODY_BYTES
    assert client.get("/healthz").json() == {"status": "ok", "model": predictor.info["name"]}
    assert "/api/predict" in client.get("/openapi.json").json()["paths"]


def test_unknown_route_is_a_json_404(client):
    assert_json_error(client.get("/api/nothing"), 404)


# ---- answers from the shipped model --------------------------------------------------------


def test_reads_drawn_digits_of_every_class(client, mnist_test):
    wrong = []
    for digit in range(10):
        for nth in range(3):
            image = png(canvas_drawing(first_of(mnist_test, digit, nth)))
            r = client.post("/api/predict", files={"file": (f"{digit}.png", image, "image/png")})
            assert r.status_code == 200, r.text
            out = r.json()
            assert out["source"] == f"{digit}.png" and out["elapsed_ms"] > 0
            assert out["status"] in ("ok", "uncertain") and out["items"]
            item = out["items"][0]
            assert sum(item["probs"]) == pytest.approx(1, abs=1e-3) and len(item["probs"]) == 10
            assert len(item["top_k"]) == 3 and item["top_k"][0]["label"] == item["label"]
            x0, y0, x1, y1 = item["box"]
            assert 0 <= x0 < x1 <= 280 and 0 <= y0 < y1 <= 280
            assert item["input_image"] is None  # only on request
            if out["text"] != str(digit):
                wrong.append((digit, out["text"]))
    assert len(wrong) <= 1, f"misread: {wrong}"


def test_reads_a_number_with_a_box_per_digit(client, mnist_test):
    digits = [2, 0, 2, 4]
    row = paper_row([first_of(mnist_test, d, nth=i) for i, d in enumerate(digits)])
    r = client.post("/api/predict?top_k=2", files={"file": ("2024.png", png(row), "image/png")})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["text"] == "2024"
    assert [it["label"] for it in out["items"]] == ["2", "0", "2", "4"]
    boxes = [it["box"] for it in out["items"]]
    assert all(a[2] <= b[0] + 8 for a, b in zip(boxes, boxes[1:], strict=False)), f"boxes not left to right: {boxes}"
    assert all(len(it["top_k"]) == 2 for it in out["items"])


@pytest.mark.parametrize("color", [0, 255])
def test_blank_image_is_no_digit_found(client, color):
    blank = png(Image.new("L", (280, 280), color))
    out = client.post("/api/predict", json={"image": data_url(blank)}).json()
    assert out["status"] == "empty" and out["text"] is None and out["items"] == []


def test_json_data_url_returns_the_model_input(client, mnist_test):
    image = png(canvas_drawing(first_of(mnist_test, 7)))
    by_json = client.post("/api/predict", json={"image": data_url(image), "include_input": True, "top_k": 5}).json()
    by_file = client.post("/api/predict", files={"file": ("7.png", image, "image/png")}).json()
    by_body = client.post("/api/predict", content=image, headers={"Content-Type": "image/png"}).json()
    assert by_json["text"] == by_file["text"] == by_body["text"] == "7"
    assert by_json["items"][0]["probs"] == pytest.approx(by_file["items"][0]["probs"], abs=1e-6)
    assert len(by_json["items"][0]["top_k"]) == 5
    seen = by_json["items"][0]["input_image"]
    assert seen.startswith("data:image/png;base64,")
    assert Image.open(io.BytesIO(base64.b64decode(seen.split(",", 1)[1]))).size == (28, 28)


def test_page_and_cli_give_the_same_answer(client, predictor, mnist_test, tmp_path, capsys):
    path = tmp_path / "number.png"
    paper_row([first_of(mnist_test, d, nth=3) for d in (3, 8)]).save(path)
    api = client.post("/api/predict", files={"file": ("number.png", path.read_bytes(), "image/png")}).json()

    direct = predictor.predict(load_image(path), top_k=3).to_dict()
    assert main(["predict", str(path), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    cli = printed[0] if isinstance(printed, list) else printed

    for other in (direct, cli):
        assert other["status"] == api["status"] and other["text"] == api["text"]
        assert [it["label"] for it in other["items"]] == [it["label"] for it in api["items"]]
        assert [it["box"] for it in other["items"]] == [it["box"] for it in api["items"]]
        for a, b in zip(other["items"], api["items"], strict=True):
            assert a["probs"] == pytest.approx(b["probs"], abs=1e-5)


def test_image_model_names_one_class_per_upload(image_checkpoint):
    with TestClient(create_app(checkpoint=image_checkpoint)) as c:
        info = c.get("/api/model").json()
        assert info["task"] == "images" and info["classes"] == ["airplane", "cat", "ship"]
        assert info["channels"] == 3 and info["image_size"] == 32
        r = c.post("/api/predict?include_input=true", files={"file": ("p.jpg", _jpeg(photo()), "image/jpeg")})
        assert r.status_code == 200, r.text
        out = r.json()
        assert out["text"] in info["classes"] and len(out["items"]) == 1
        item = out["items"][0]
        assert item["box"] is None and len(item["probs"]) == 3 and out["text"] == item["label"]
        assert item["input_image"].startswith("data:image/png;base64,")


def _jpeg(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


# ---- bad input -----------------------------------------------------------------------------


def test_body_over_the_limit_is_413_before_it_is_read():
    small = TestClient(create_app(StandIn(), max_body_bytes=10_000))
    assert_json_error(small.post("/api/predict", content=b"\0" * 10_001, headers={"Content-Type": "image/png"}), 413)
    files = {"file": ("big.png", b"\0" * 20_000, "image/png")}
    assert_json_error(small.post("/api/predict", files=files), 413)
    # A chunked body has no Content-Length: it is counted as it arrives.
    chunks = (b"\0" * 4096 for _ in range(5))
    assert_json_error(small.post("/api/predict", content=chunks, headers={"Content-Type": "image/png"}), 413)


def test_default_body_limit(client):
    error = assert_json_error(
        client.post("/api/predict", content=b"\0" * (MAX_BODY_BYTES + 1), headers={"Content-Type": "image/png"}), 413
    )
    assert str(MAX_BODY_BYTES) in error


@pytest.mark.parametrize(
    "request_kwargs",
    [
        {"files": {"file": ("notes.txt", b"hello", "text/plain")}},
        {"files": {"file": ("doc.pdf", b"%PDF-1.4", "application/pdf")}},
        {"content": b"hello", "headers": {"Content-Type": "text/plain"}},
        {"content": b"hello"},
        {"json": {"image": data_url(b"hello", "text/plain")}},
        {"json": {"image": data_url(b"<svg/>", "image/svg+xml")}},
    ],
    ids=["multipart-text", "multipart-pdf", "raw-text", "no-type", "data-url-text", "data-url-svg"],
)
def test_non_images_are_415(client, request_kwargs):
    error = assert_json_error(client.post("/api/predict", **request_kwargs), 415)
    assert "image/png" in error


def _bomb() -> bytes:
    """A 1-bit PNG of 8000x8000 = 64 megapixels: a few KB on the wire, over the pixel limit."""
    return png(Image.new("1", (8000, 8000)))


@pytest.mark.parametrize(
    "make, words",
    [
        (lambda: png(Image.new("L", (64, 64), 255))[:60], "truncated"),
        (lambda: b"\x89PNG\r\n\x1a\n" + b"garbage" * 50, "image"),
        (lambda: b"", "empty"),
        (_bomb, "limit"),
    ],
    ids=["truncated", "garbage", "empty", "pixel-bomb"],
)
def test_corrupt_images_are_400_with_a_clear_error(client, make, words):
    error = assert_json_error(client.post("/api/predict", files={"file": ("x.png", make(), "image/png")}), 400)
    assert words in error


@pytest.mark.parametrize(
    "request_kwargs, status",
    [
        ({"json": {"image": "not a data url"}}, 400),
        ({"json": {"image": "data:image/png;base64,***"}}, 400),
        ({"json": {"picture": "data:image/png;base64,AAAA"}}, 422),
        ({"json": {"image": "data:image/png;base64,AAAA", "top_k": 0}}, 422),
        ({"content": b"{not json", "headers": {"Content-Type": "application/json"}}, 422),
        ({"files": {"picture": ("x.png", b"\x89PNG", "image/png")}}, 400),
    ],
    ids=["not-data-url", "bad-base64", "no-image-field", "top-k-0", "bad-json", "no-file-field"],
)
def test_malformed_requests_are_json_errors(client, request_kwargs, status):
    assert_json_error(client.post("/api/predict", **request_kwargs), status)


def test_a_bug_is_a_json_500_without_details():
    def crash(image):
        raise RuntimeError("secret /home/user/path in a stack frame")

    c = TestClient(create_app(StandIn(crash)), raise_server_exceptions=False)
    error = assert_json_error(
        c.post("/api/predict", content=png(Image.new("L", (8, 8))), headers={"Content-Type": "image/png"}), 500
    )
    assert "secret" not in error


# ---- the bounded pool ----------------------------------------------------------------------


def test_a_burst_queues_up_to_the_limit_then_gets_503():
    release, started = threading.Event(), threading.Event()

    def slow(image):
        started.set()
        assert release.wait(10)

    app = create_app(StandIn(slow), workers=1, max_queue=1)
    image = png(Image.new("L", (8, 8)))

    async def burst():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            post = lambda: c.post("/api/predict", content=image, headers={"Content-Type": "image/png"})  # noqa: E731
            running = asyncio.create_task(post())
            await asyncio.to_thread(started.wait, 10)  # the one worker is busy
            queued = asyncio.create_task(post())
            await asyncio.sleep(0.05)
            refused = await post()  # worker busy and queue full
            release.set()
            return refused, await running, await queued

    refused, running, queued = asyncio.run(burst())
    assert_json_error(refused, 503)
    assert refused.headers["retry-after"] == "1"
    assert running.status_code == queued.status_code == 200


def test_prediction_processes_answer_as_threads_do(client, mnist_test):
    image = png(canvas_drawing(first_of(mnist_test, 4)))
    by_thread = client.post("/api/predict", json={"image": data_url(image), "include_input": True}).json()
    with TestClient(create_app(checkpoint=None, processes=1)) as c:  # the predictor is pickled to a process
        by_process = c.post("/api/predict", json={"image": data_url(image), "include_input": True}).json()
        assert_json_error(c.post("/api/predict", files={"file": ("x.png", b"\x89PNG garbage", "image/png")}), 400)
    assert by_process["text"] == by_thread["text"] == "4"
    assert by_process["items"][0]["input_image"] == by_thread["items"][0]["input_image"]
    assert by_process["items"][0]["probs"] == pytest.approx(by_thread["items"][0]["probs"], abs=1e-6)


def test_a_dead_prediction_process_is_replaced():
    app = create_app(DiesOn13x13(), processes=1)
    with TestClient(app, raise_server_exceptions=False) as c:

        def post(size):
            return c.post("/api/predict", content=png(Image.new("L", size)), headers={"Content-Type": "image/png"})

        assert_json_error(post((13, 13)), 500)
        assert post((8, 8)).status_code == 200


# ---- digitlab serve ------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_binds_loopback_prints_the_url_and_answers():
    port = free_port()
    cmd = [sys.executable, "-m", "digitlab", "serve", "--port", str(port), "--log-level", "warning"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        line = proc.stdout.readline()
        assert f"http://127.0.0.1:{port}/" in line, line
        assert "prediction processes" in line, line  # the default: processes, not threads
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                    assert json.load(r)["status"] == "ok"
                    break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, "server did not start"
                time.sleep(0.2)
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_serve_with_prediction_processes_reads_a_digit(mnist_test):
    port = free_port()
    cmd = [sys.executable, "-m", "digitlab", "serve", "--port", str(port), "--processes", "2", "--log-level", "warning"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    body = json.dumps({"image": data_url(png(canvas_drawing(first_of(mnist_test, 3))))}).encode()
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                request = urllib.request.Request(
                    f"http://127.0.0.1:{port}/api/predict", data=body, headers={"Content-Type": "application/json"}
                )
                with urllib.request.urlopen(request, timeout=10) as r:
                    assert json.load(r)["text"] == "3"
                    break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, (
                    proc.stderr.read() if proc.poll() else "no answer"
                )
                time.sleep(0.3)
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    assert proc.returncode is not None


def test_serve_refuses_a_missing_checkpoint(tmp_path, capsys):
    assert main(["serve", "--model", str(tmp_path / "missing.pt")]) != 0
    assert "missing.pt" in capsys.readouterr().err


def test_serve_runs_processes_by_default_and_threads_when_asked(monkeypatch, capsys):
    import uvicorn

    import digitlab.web.app as web_app

    seen = []
    monkeypatch.setattr(web_app, "create_app", lambda **kw: seen.append(kw) or object())
    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: None)
    monkeypatch.setattr("digitlab.web.pool.default_processes", lambda: 3)
    assert main(["serve"]) == 0
    assert main(["serve", "--workers", "4"]) == 0  # --workers alone: threads, no processes
    assert main(["serve", "--processes", "2", "--workers", "4"]) == 0
    assert main(["serve", "--processes", "0"]) == 0
    assert [(k["processes"], k["workers"]) for k in seen] == [(3, 2), (0, 4), (2, 4), (0, 2)]
    out = capsys.readouterr().out
    assert "3 prediction processes" in out and "4 prediction threads" in out and "2 prediction threads" in out


# ---- operations: liveness, readiness, metrics, docs, a bad model at start --------------------------


def test_livez_readyz_and_metrics(client):
    assert client.get("/livez").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ready"}
    client.post("/api/predict", content=b"not an image", headers={"Content-Type": "image/png"})
    text = client.get("/metrics").text
    assert 'digitlab_http_requests_total{route="/api/predict",status="400"}' in text
    assert 'digitlab_http_requests_total{route="/readyz",status="200"} 1.0' in text
    assert "digitlab_http_request_duration_seconds_bucket" in text and "digitlab_queue_depth 0.0" in text
    assert "digitlab_ready 1.0" in text
    client.get("/no/such/path/12345")
    assert "/no/such/path" not in client.get("/metrics").text  # unknown paths share one label


def test_swagger_ui_is_off_unless_asked_for(client):
    assert client.get("/docs").status_code == 404
    assert client.get("/openapi.json").json()["info"]["title"] == "digitlab"
    with TestClient(create_app(StandIn(), docs=True)) as c:
        assert c.get("/docs").status_code == 200


def test_the_host_check(predictor):
    with TestClient(create_app(StandIn(), allowed_hosts=["localhost"]), base_url="http://localhost") as c:
        assert c.get("/healthz").status_code == 200
        assert c.get("/healthz", headers={"Host": "rebound.example"}).status_code == 400


@pytest.mark.parametrize("field, value", [("image_size", 0), ("channels", "x"), ("temperature", float("nan"))])
def test_serve_refuses_a_bad_checkpoint_in_one_line(tmp_path, capsys, field, value):
    import torch

    from digitlab.inference.predictor import default_model_path

    ckpt = torch.load(default_model_path(), weights_only=True)
    ckpt[field] = value
    torch.save(ckpt, tmp_path / "bad.pt")
    assert main(["serve", "--model", str(tmp_path / "bad.pt")]) == 2
    err = capsys.readouterr().err.strip()
    assert field in err and len(err.splitlines()) == 1 and not TRACEBACK.search(err), err
