"""The prediction pool's processes: answers reach the request that asked, whatever the clients do."""

from __future__ import annotations

import asyncio
import time

import pytest
from PIL import Image

from digitlab.web.pool import InferencePool, ServerBusy, default_processes
from test_web_api import _Answer, png


class SaysItsWidth:
    """A stand-in that answers with the image's width, slowly for images 50 px wide or more."""

    info = {"name": "stand-in", "classes": [str(i) for i in range(10)], "task": "digits"}

    def predict(self, image, top_k=3, multi=True, include_input=False):
        if image.size[0] >= 50:
            time.sleep(1.0)
        return _Answer(
            {"source": None, "status": "ok", "text": str(image.size[0]), "items": [], "error": None, "elapsed_ms": 0.0}
        )


def image(width: int) -> bytes:
    return png(Image.new("L", (width, 8)))


def test_a_client_that_leaves_does_not_get_its_answer_read_by_the_next():
    async def scenario():
        pool = InferencePool(SaysItsWidth(), workers=1, max_queue=0, processes=1)
        pool.start()
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
        pool.start()
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
        pool.start()
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
