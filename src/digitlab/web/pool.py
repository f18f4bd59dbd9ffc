"""Where the web app's predictions run: a bounded pool of threads or of processes.

Threads share the one loaded model; on a small server they also share one core's worth
of Python (the GIL), and preprocessing is mostly Python-driven numpy. Processes each hold
a copy of the model (it is small) and use every core; the HTTP front stays in the server
process and sends them the image bytes. Either way a burst waits in a bounded queue, and
past it the caller gets ``ServerBusy`` (503).

Each process has its own pipe, which the server's event loop writes and watches itself: no
executor threads between them. With a ``ProcessPoolExecutor`` (a feeder thread, a manager thread
and wake-up pipes per request) the server process spent 0.71 ms of CPU per request on a 2-core
machine with a prediction that did nothing; with these pipes 0.53 ms (BENCHMARKS.md, web).
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection

from digitlab.errors import DigitlabError
from digitlab.inference.image import load_image

log = logging.getLogger(__name__)

_predictor = None  # in a worker process: the predictor it was started with (see _start_worker)
_PING = "ping"  # asks a worker to answer once it is loaded
_STOP = None  # asks a worker to end


MAX_DEFAULT_PROCESSES = 8  # each holds a model and a torch runtime (~240 MB resident)


def default_processes() -> int:
    """Prediction processes ``digitlab serve`` starts unless told: one per core it may use, plus one.

    The extra one has a request in hand while another waits for the server to pass it the next
    image: on a 2-core machine, 3 processes answered 5-10% more requests per second than 2.
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return min(cores + 1, MAX_DEFAULT_PROCESSES)


class ServerBusy(Exception):
    """Every worker is busy and the queue is full."""


class WorkerDied(Exception):
    """A prediction process ended in the middle of a request (it is replaced; the request fails)."""


def predict_image(predictor, data: bytes, source: str, top_k: int, include_input: bool) -> dict:
    """One uploaded image's JSON answer; DigitlabError (400) for an unreadable image."""
    image = load_image(data)  # DigitlabError for corrupt, non-image or oversized images
    result = predictor.predict(image, top_k=top_k, multi=True, include_input=include_input)
    out = result.to_dict(include_input=include_input)
    if out.get("status") == "error":
        raise DigitlabError(out.get("error") or "could not read the image")
    return {**out, "source": source}


def _exit_with(parent: int) -> None:
    """End this worker when the server process is gone, however it ended (even SIGKILL)."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(0)


def _start_worker(predictor, parent: int) -> None:
    """Runs once in each worker process: keep the predictor; one torch thread per process."""
    global _predictor
    import torch

    torch.set_num_threads(1)  # the processes are the parallelism; more threads only contend
    _predictor = predictor
    threading.Thread(target=_exit_with, args=(parent,), daemon=True).start()


def _worker_main(conn: Connection, predictor, parent: int) -> None:
    """A prediction process: answer each request on ``conn`` with (True, JSON dict) or (False, exception)."""
    _start_worker(predictor, parent)
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):  # the server closed its end
            return
        if message is _STOP:
            return
        if message == _PING:
            conn.send(_PING)
            continue
        try:
            answer = (True, predict_image(_predictor, *message))
        except Exception as exc:  # noqa: BLE001 - the server decides what the client sees
            answer = (False, exc)
        try:
            conn.send(answer)
        except Exception as exc:  # noqa: BLE001 - an exception that does not pickle
            conn.send((False, RuntimeError(f"{type(exc).__name__} while sending the answer")))


def _retrieve(task: asyncio.Task) -> None:
    """Mark a shielded request's failure as seen: its client may have gone (a dead worker is logged where it dies)."""
    if not task.cancelled():
        task.exception()


class _Worker:
    """One prediction process and the server's end of its pipe."""

    def __init__(self, predictor, parent: int) -> None:
        ctx = multiprocessing.get_context("spawn")  # no fork of a process with torch's threads
        self.conn, child = ctx.Pipe(duplex=True)
        self.process = ctx.Process(
            target=_worker_main, args=(child, predictor, parent), daemon=True, name="digitlab-predict"
        )
        self.process.start()
        child.close()

    def ready(self) -> None:
        """Block until the process has loaded the model (or raise WorkerDied)."""
        try:
            self.conn.send(_PING)
            if self.conn.recv() != _PING:
                raise WorkerDied("unexpected first answer")
        except (EOFError, OSError) as exc:
            raise WorkerDied("a prediction process did not start") from exc

    async def ask(self, message: tuple) -> tuple[bool, object]:
        """Send one request and wait, without blocking the event loop, for its answer."""
        loop = asyncio.get_running_loop()
        fd = self.conn.fileno()
        try:
            self.conn.send(message)
            readable = loop.create_future()
            loop.add_reader(fd, lambda: readable.done() or readable.set_result(None))
            try:
                await readable
            finally:
                loop.remove_reader(fd)
            return self.conn.recv()
        except (EOFError, OSError) as exc:
            raise WorkerDied("a prediction process ended while reading an image") from exc

    def stop(self, timeout: float) -> None:
        try:
            self.conn.send(_STOP)
        except OSError:
            pass
        self.process.join(timeout)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(timeout)
        self.conn.close()


class InferencePool:
    """Runs predictions on ``workers`` threads, or ``processes`` processes, with at most
    ``max_queue`` waiting.

    A burst of requests queues here instead of starting unbounded work; past the queue the
    caller gets ``ServerBusy``. A slot is freed when its work really ends, even if the client
    has gone. Processes are started from a fresh interpreter (spawn) and receive the
    predictor pickled; one that dies is replaced, and its request fails.
    """

    def __init__(self, predictor, workers: int, max_queue: int, processes: int = 0) -> None:
        if workers < 1 or max_queue < 0 or processes < 0:
            raise DigitlabError(
                f"need workers >= 1, max_queue >= 0 and processes >= 0, got {workers}, {max_queue} and {processes}"
            )
        self.predictor = predictor
        self.processes = processes
        self.executor = (
            None if processes else ThreadPoolExecutor(max_workers=workers, thread_name_prefix="digitlab-predict")
        )
        self.slots = threading.BoundedSemaphore((processes or workers) + max_queue)
        self._workers: list[_Worker] = []
        self._idle: asyncio.Queue[_Worker] | None = None

    def start(self) -> None:
        """Start every worker process now and wait until each has loaded the model.

        Call it from the event loop that will serve the requests (the app's lifespan).
        """
        if not self.processes:
            return
        self._idle = asyncio.Queue()
        self._workers = [_Worker(self.predictor, os.getpid()) for _ in range(self.processes)]
        for w in self._workers:
            w.ready()
            self._idle.put_nowait(w)

    async def predict(self, data: bytes, source: str, top_k: int, include_input: bool) -> dict:
        if not self.slots.acquire(blocking=False):
            raise ServerBusy
        if not self.processes:
            try:
                future = self.executor.submit(predict_image, self.predictor, data, source, top_k, include_input)
            except BaseException:
                self.slots.release()
                raise
            future.add_done_callback(lambda _: self.slots.release())
            return await asyncio.wrap_future(future)
        # Shielded: a client that goes away must not cut a request off its worker halfway (its
        # answer would be read as the next request's); the slot is freed when the worker is done.
        task = asyncio.ensure_future(self._on_a_worker((data, source, top_k, include_input)))
        task.add_done_callback(_retrieve)  # no "exception never retrieved" when the client has gone
        ok, answer = await asyncio.shield(task)
        if not ok:
            raise answer
        return answer

    async def _on_a_worker(self, message: tuple) -> tuple[bool, object]:
        try:
            if self._idle is None:
                raise RuntimeError("the prediction pool was not started")
            worker = await self._idle.get()
            try:
                return await worker.ask(message)
            except WorkerDied:
                log.error("a prediction process died; starting a new one")
                self._workers.remove(worker)
                worker.stop(timeout=1.0)
                worker = _Worker(self.predictor, os.getpid())  # loads in the background; its first request waits
                self._workers.append(worker)
                raise
            finally:
                self._idle.put_nowait(worker)
        finally:
            self.slots.release()

    def shutdown(self) -> None:
        if self.executor is not None:
            self.executor.shutdown(wait=False, cancel_futures=True)
        # Processes are waited for (they are idle by now): a server that exits first leaves them running.
        for w in self._workers:
            w.stop(timeout=10.0)
        self._workers = []
