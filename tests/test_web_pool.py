"""The prediction pool's processes: answers reach the request that asked, whatever the clients do."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time

import numpy as np
import pytest
from PIL import Image

from conftest import Answer, png
from digitlab.web.pool import InferencePool, ServerBusy, default_processes


class SaysItsWidth:
    """A stand-in that answers with the image's width, slowly for images 50 px wide or more."""

    info = {"name": "stand-in", "classes": [str(i) for i in range(10)], "task": "digits"}

    def predict(self, image, top_k=3, multi=True, include_input=False):
        if image.size[0] >= 50:
            time.sleep(1.0)
        return Answer(
            {"source": None, "status": "ok", "text": str(image.size[0]), "items": [], "error": None, "elapsed_ms": 0.0}
        )


def image(width: int) -> bytes:
    return png(Image.new("L", (width, 8)))


def test_a_client_that_leaves_does_not_get_its_answer_read_by_the_next():
    async def scenario():
        pool = InferencePool(SaysItsWidth(), workers=1, max_queue=0, processes=1)
        await pool.start()
        try:
            slow = asyncio.create_task(pool.predict(image(60), "slow", 3, False))
            await asyncio.sleep(0.3)  # on the worker now
            slow.cancel()  # the client went away
            with pytest.raises(asyncio.CancelledError):
                await slow
            with pytest.raises(ServerBusy):  # its worker (the only slot) is still busy with it ...
                await pool.predict(image(7), "early", 3, False)
            await asyncio.sleep(1.2)
            answer = await pool.predict(image(9), "next", 3, False)  # ... and free once it is done
            return answer
        finally:
            pool.shutdown()

    answer = asyncio.run(scenario())
    assert answer["source"] == "next" and answer["text"] == "9"


def test_requests_queue_for_the_processes_and_each_gets_its_own_answer():
    async def scenario():
        pool = InferencePool(SaysItsWidth(), workers=1, max_queue=8, processes=2)
        await pool.start()
        try:
            widths = [3, 60, 5, 7, 11, 13, 17]
            answers = await asyncio.gather(*(pool.predict(image(w), f"w{w}", 3, False) for w in widths))
            return widths, answers
        finally:
            pool.shutdown()

    widths, answers = asyncio.run(scenario())
    assert [a["text"] for a in answers] == [str(w) for w in widths]
    assert [a["source"] for a in answers] == [f"w{w}" for w in widths]


def test_an_unreadable_image_raises_the_workers_error_in_the_server():
    from digitlab.errors import DigitlabError

    async def scenario():
        pool = InferencePool(SaysItsWidth(), workers=1, max_queue=1, processes=1)
        await pool.start()
        try:
            with pytest.raises(DigitlabError, match="not an image"):
                await pool.predict(b"garbage", "x", 3, False)
            return await pool.predict(image(4), "y", 3, False)
        finally:
            pool.shutdown()

    assert asyncio.run(scenario())["text"] == "4"


def test_default_processes_is_one_per_core_plus_one_within_the_cap(monkeypatch):
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert default_processes() == 3
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(64)), raising=False)
    assert default_processes() == 8


# ---- stuck and dead processes: replaced, their requests answered, the server never frozen ----------


class Quick:
    """A stand-in that answers at once (the warm-up included)."""

    info = SaysItsWidth.info | {"channels": 1, "image_size": 28, "accuracy": None, "dataset": "mnist"}

    def predict(self, image, top_k=3, multi=True, include_input=False):
        return Answer({"source": None, "status": "empty", "text": None, "items": [], "error": None, "elapsed_ms": 0.0})


def big_png() -> bytes:
    """About 2 MB of PNG: more than a socket buffer holds, so a stopped process blocks its sender."""
    rng = np.random.default_rng(0)
    return png(Image.fromarray(rng.integers(0, 256, (800, 880, 3), dtype=np.uint8)))


def wait_ready(c, seconds: float = 180.0) -> None:
    deadline = time.monotonic() + seconds
    while c.get("/readyz").status_code != 200:
        assert time.monotonic() < deadline, "the pool did not become ready again"
        time.sleep(0.2)


def pids(app) -> list[int]:
    return sorted(w.process.pid for w in app.state.pool._workers)


def test_a_stopped_process_is_replaced_and_the_server_keeps_answering():
    from fastapi.testclient import TestClient

    from digitlab.web.app import create_app

    app = create_app(Quick(), processes=2, max_queue=8, deadline_s=3.0)
    body = big_png()
    assert len(body) > 1_500_000
    with TestClient(app) as c:
        assert c.get("/readyz").json() == {"status": "ready"}
        stopped = pids(app)[0]
        os.kill(stopped, signal.SIGSTOP)  # as if hung in native code
        results: list = []

        def post() -> None:
            results.append(c.post("/api/predict", content=body, headers={"Content-Type": "image/png"}))

        threads = [threading.Thread(target=post) for _ in range(4)]
        for t in threads:
            t.start()
        health = c.get("/healthz")  # answers while a request waits on the stopped process
        live = c.get("/livez")
        assert health.status_code == 200 and live.status_code == 200
        assert len(results) < 4  # ... which has not been answered yet (its deadline is 3 s away)
        for t in threads:
            t.join(60)
        codes = sorted(r.status_code for r in results)
        assert len(codes) == 4 and set(codes) <= {200, 503}, codes
        assert 503 in codes and 200 in codes, codes  # the stuck one is answered, the others served
        refused = next(r for r in results if r.status_code == 503)
        assert refused.headers["retry-after"] == "1" and "longer than 3 s" in refused.json()["error"]
        not_ready = c.get("/readyz")  # its replacement is still importing torch
        assert not_ready.status_code == 503 and not_ready.json() == {"status": "not ready"}
        assert "digitlab_ready 0.0" in c.get("/metrics").text
        wait_ready(c)
        assert stopped not in pids(app) and len(pids(app)) == 2
        assert 'digitlab_worker_restarts_total{reason="stuck"} 1.0' in c.get("/metrics").text
        statuses = [c.post("/api/predict", content=image(9), headers={"Content-Type": "image/png"}).status_code]
        assert statuses == [200]


def test_a_killed_idle_process_is_replaced_and_no_request_fails():
    from fastapi.testclient import TestClient

    from digitlab.web.app import create_app

    app = create_app(Quick(), processes=2, max_queue=8)
    with TestClient(app) as c:
        killed = pids(app)[0]
        os.kill(killed, signal.SIGKILL)
        time.sleep(0.5)  # dead before it is next asked
        codes = [
            c.post("/api/predict", content=image(5), headers={"Content-Type": "image/png"}).status_code
            for _ in range(6)
        ]
        assert codes == [200] * 6
        wait_ready(c)
        assert killed not in pids(app) and len(pids(app)) == 2
        assert 'digitlab_worker_restarts_total{reason="died"} 1.0' in c.get("/metrics").text
