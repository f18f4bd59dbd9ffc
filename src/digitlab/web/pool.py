"""Where the web app's predictions run: a bounded pool of threads or of processes.

Threads share the one loaded model; on a small server they also share one core's worth
of Python (the GIL), and preprocessing is mostly Python-driven numpy. Processes each hold
a copy of the model (it is small) and use every core; the HTTP front stays in the server
process and sends them the image bytes. Either way a burst waits in a bounded queue, and
past it the caller gets ``ServerBusy`` (503).

Each process has its own socket pair, which the server's event loop reads and writes as
asyncio streams: no executor threads between them, and no write that can block the loop (a
stopped process whose socket buffer is full only makes that one request wait). Every request
has a deadline; a process that misses it is killed and replaced, and its request answered 503,
so one stuck or dead process never freezes the server or its health checks.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import pickle
import socket
import struct
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection

from PIL import Image

from digitlab.errors import DigitlabError
from digitlab.inference.image import decode_image

log = logging.getLogger(__name__)

_predictor = None  # in a worker process: the predictor it was started with (see _start_worker)
_PING = "ping"  # asks a worker to warm up and answer once it is ready
_STOP = None  # asks a worker to end

MAX_DEFAULT_PROCESSES = 8  # each holds a model and its runtime (~100 MB resident for the ONNX twin, ~260 MB for torch)
# A request's whole time in the pool: waiting for a process, sending the image, predicting.
# Several hundred times the shipped model's median answer (BENCHMARKS.md, web), and room for the
# largest allowed photo (40 megapixels) on a busy core: only a stuck process reaches it.
REQUEST_DEADLINE_S = 10.0
# A fresh process imports torch and unpickles the model: seconds on a quiet machine, more when
# its cores are shared. Past this it is taken for failed and started again.
STARTUP_DEADLINE_S = 120.0
RETRY_AFTER_S = 1  # what a 503 tells the client to wait (a replacement is ready within seconds)


def default_processes() -> int:
    """Prediction processes ``digitlab serve`` starts unless told: one per core it may use, plus one.

    The extra one has a request in hand while another waits for the server to pass it the next
    image, so the cores stay busy (BENCHMARKS.md, web: requests per second by process count).
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return min(cores + 1, MAX_DEFAULT_PROCESSES)


class ServerBusy(Exception):
    """No worker can take the request in time: the queue is full, or a process is stuck (503)."""

    def __init__(self, message: str = "server busy; try again in a moment") -> None:
        super().__init__(message)


class WorkerDied(Exception):
    """A prediction process ended in the middle of a request (it is replaced; the request fails)."""


def predict_image(predictor, data: bytes, source: str, top_k: int, include_input: bool) -> dict:
    """One uploaded image's JSON answer; DigitlabError (400) for an unreadable image."""
    image = decode_image(data, source)  # DigitlabError for corrupt, non-image or oversized images
    result = predictor.predict(image, top_k=top_k, multi=True, include_input=include_input)
    out = result.to_dict(include_input=include_input)
    if out.get("status") == "error":
        raise DigitlabError(out.get("error") or "could not read the image")
    return {**out, "source": source}


def warm_up(predictor) -> None:
    """One prediction of a blank and of a drawn image, so that a process is fast from its first request."""
    drawn = Image.new("L", (28, 28))
    drawn.paste(255, (12, 4, 16, 24))
    for image in (Image.new("L", (28, 28)), drawn):
        predictor.predict(image, top_k=1, multi=True)


def _exit_with(parent: int) -> None:
    """End this worker when the server process is gone, however it ended (even SIGKILL)."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(0)


def _start_worker(predictor, parent: int) -> None:
    """Runs once in each worker process: keep the predictor; one model thread per process."""
    global _predictor
    from digitlab.inference.onnx import set_threads

    set_threads(1)  # the processes are the parallelism; more threads only contend (unpickling a PyTorch
    # predictor imported torch, so this reaches it)
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
            try:
                warm_up(_predictor)
                conn.send(_PING)
            except Exception as exc:  # noqa: BLE001 - the server reports it and starts no traffic here
                conn.send((False, RuntimeError(f"warm-up failed: {type(exc).__name__}: {exc}")))
            continue
        answer: tuple[bool, object]
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


def _frame(message: object) -> bytes:
    """``message`` as ``multiprocessing.connection.Connection.recv`` reads it: a length, then the pickle."""
    payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return struct.pack("!i", len(payload)) + payload  # bodies are capped far below 2 GiB


class _Worker:
    """One prediction process and the server's end of its socket, as asyncio streams."""

    def __init__(self, predictor, parent: int) -> None:
        """Start the process (blocking: spawn writes the pickled predictor to the child; call it in a thread)."""
        ctx = multiprocessing.get_context("spawn")  # no fork of a process with torch's threads
        mine, theirs = socket.socketpair()
        self.sock = mine
        child = Connection(theirs.detach())
        self.process = ctx.Process(
            target=_worker_main, args=(child, predictor, parent), daemon=True, name="digitlab-predict"
        )
        self.process.start()
        child.close()
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def ready(self) -> None:
        """Wait until the process has loaded the model and warmed it up (or raise WorkerDied)."""
        self.reader, self.writer = await asyncio.open_unix_connection(sock=self.sock)
        try:
            answer = await asyncio.wait_for(self.ask(_PING), STARTUP_DEADLINE_S)
        except asyncio.TimeoutError as exc:
            raise WorkerDied(f"a prediction process did not start within {STARTUP_DEADLINE_S:.0f} s") from exc
        if answer != _PING:
            raise WorkerDied(f"a prediction process could not start: {answer}")

    async def ask(self, message: object) -> object:
        """Send one message and wait, without blocking the event loop, for its answer."""
        assert self.reader is not None and self.writer is not None
        try:
            self.writer.write(_frame(message))
            await self.writer.drain()
            (size,) = struct.unpack("!i", await self.reader.readexactly(4))
            return pickle.loads(await self.reader.readexactly(size))
        except (asyncio.IncompleteReadError, ConnectionError, OSError, EOFError) as exc:
            raise WorkerDied("a prediction process ended while reading an image") from exc

    def kill(self) -> None:
        """End the process at once (SIGKILL ends a stopped one too) and close the socket; never blocks."""
        if self.process.is_alive():
            self.process.kill()
            # Reaped off the event loop, so no zombie is left per replacement.
            threading.Thread(target=self.process.join, args=(30.0,), daemon=True).start()
        if self.writer is not None:
            self.writer.close()
        else:
            self.sock.close()

    def stop(self, timeout: float) -> None:
        """End the process politely (it finishes its request first), then by force; blocks up to ``2 timeout``."""
        try:
            if self.writer is None:
                self.sock.sendall(_frame(_STOP))
            else:
                self.writer.write(_frame(_STOP))
        except OSError:
            pass
        self.process.join(timeout)
        self.kill()
        self.process.join(timeout)


class InferencePool:
    """Runs predictions on ``workers`` threads, or ``processes`` processes, with at most
    ``max_queue`` waiting.

    A burst of requests queues here instead of starting unbounded work; past the queue the
    caller gets ``ServerBusy``. A slot is freed when its work really ends, even if the client
    has gone. Processes are started from a fresh interpreter (spawn) and receive the
    predictor pickled; one that dies or misses ``deadline_s`` is killed and replaced in the
    background, and its request fails (500 for a death, 503 for a deadline).
    """

    def __init__(
        self,
        predictor,
        workers: int,
        max_queue: int,
        processes: int = 0,
        deadline_s: float = REQUEST_DEADLINE_S,
        on_restart: Callable[[str], None] | None = None,
    ) -> None:
        if workers < 1 or max_queue < 0 or processes < 0 or not deadline_s > 0:
            raise DigitlabError(
                f"need workers >= 1, max_queue >= 0, processes >= 0 and a deadline > 0, got {workers}, "
                f"{max_queue}, {processes} and {deadline_s}"
            )
        self.predictor = predictor
        self.processes = processes
        self.deadline_s = deadline_s
        self.on_restart = on_restart or (lambda reason: None)
        self.executor = (
            None if processes else ThreadPoolExecutor(max_workers=workers, thread_name_prefix="digitlab-predict")
        )
        self.capacity = (processes or workers) + max_queue
        self.slots = threading.BoundedSemaphore(self.capacity)
        self.in_flight = 0  # requests holding a slot: running or waiting (the /metrics queue depth)
        self._workers: list[_Worker] = []
        self._idle: asyncio.Queue[_Worker] | None = None
        self._starting = 0  # processes being started or replaced
        self._started = False
        self._closed = False
        self._background: set[asyncio.Task] = set()

    @property
    def ready(self) -> bool:
        """Every prediction process has loaded and warmed the model, and none is being replaced."""
        return self._started and not self._closed and self._starting == 0

    async def start(self) -> None:
        """Start every worker process now and wait until each has loaded and warmed the model.

        Call it from the event loop that will serve the requests (the app's lifespan).
        """
        if self.processes:
            self._idle = asyncio.Queue()
            self._starting = self.processes
            try:
                workers = await asyncio.gather(*(self._new_worker() for _ in range(self.processes)))
            finally:
                self._starting = 0
            for w in workers:
                self._idle.put_nowait(w)
        self._started = True

    async def _new_worker(self) -> _Worker:
        worker = await asyncio.to_thread(_Worker, self.predictor, os.getpid())
        self._workers.append(worker)
        try:
            await worker.ready()
        except BaseException:
            self._workers.remove(worker)
            worker.kill()
            raise
        return worker

    def _replace(self, worker: _Worker, reason: str, kind: str) -> None:
        """Kill ``worker`` and start another in the background; the pool is not ready until it is.

        ``kind`` ("stuck", "died" or "interrupted") is what ``on_restart`` is told (the metrics' label).
        """
        log.error("a prediction process (pid %s) %s; starting a new one", worker.process.pid, reason)
        if worker in self._workers:
            self._workers.remove(worker)
        worker.kill()
        self.on_restart(kind)
        self._starting += 1
        task = asyncio.ensure_future(self._restart())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _restart(self) -> None:
        try:
            while not self._closed:
                try:
                    worker = await self._new_worker()
                except WorkerDied as exc:
                    log.error("%s; trying again", exc)
                    await asyncio.sleep(1.0)
                    continue
                assert self._idle is not None
                self._idle.put_nowait(worker)
                return
        finally:
            self._starting -= 1

    async def predict(self, data: bytes, source: str, top_k: int, include_input: bool) -> dict:
        if not self.slots.acquire(blocking=False):
            raise ServerBusy
        self.in_flight += 1
        if self.executor is not None:
            try:
                future = self.executor.submit(predict_image, self.predictor, data, source, top_k, include_input)
            except BaseException:
                self._release()
                raise
            future.add_done_callback(lambda _: self._release())
            try:  # a stuck thread cannot be stopped: the client is answered; the slot stays taken until it ends
                return await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(future)), self.deadline_s)
            except asyncio.TimeoutError:
                raise ServerBusy(f"no answer within {self.deadline_s:g} s; try again in a moment") from None
        # Shielded: a client that goes away must not cut a request off its worker halfway; the
        # slot is freed when the worker is done (or killed at the deadline).
        task = asyncio.ensure_future(self._on_a_worker((data, source, top_k, include_input)))
        task.add_done_callback(_retrieve)  # no "exception never retrieved" when the client has gone
        ok, answer = await asyncio.shield(task)
        if not ok:
            assert isinstance(answer, BaseException)
            raise answer
        assert isinstance(answer, dict)
        return answer

    def _release(self) -> None:
        self.in_flight -= 1
        self.slots.release()

    async def _take_worker(self, until: float) -> _Worker:
        """An idle, living worker, waiting at most until ``until`` (loop time)."""
        loop = asyncio.get_running_loop()
        if self._idle is None:
            raise RuntimeError("the prediction pool was not started")
        while True:
            try:
                worker = await asyncio.wait_for(self._idle.get(), max(0.0, until - loop.time()))
            except asyncio.TimeoutError:
                raise ServerBusy(f"no prediction process free within {self.deadline_s:g} s; try again") from None
            if worker.process.is_alive():
                return worker
            self._replace(worker, "ended while idle", "died")  # killed from outside: this request takes the next one

    async def _on_a_worker(self, message: tuple) -> tuple[bool, object]:
        loop = asyncio.get_running_loop()
        until = loop.time() + self.deadline_s
        try:
            worker = await self._take_worker(until)
            try:
                answer = await asyncio.wait_for(worker.ask(message), max(0.001, until - loop.time()))
            except asyncio.TimeoutError:
                self._replace(worker, f"gave no answer within {self.deadline_s:g} s", "stuck")
                raise ServerBusy(
                    f"the prediction took longer than {self.deadline_s:g} s and was stopped; try again"
                ) from None
            except WorkerDied:
                self._replace(worker, "died", "died")
                raise
            except BaseException:  # cancelled (server shutting down): the worker's state is unknown
                self._replace(worker, "was interrupted", "interrupted")
                raise
            self._idle.put_nowait(worker)  # type: ignore[union-attr]
            return answer  # type: ignore[return-value]
        finally:
            self._release()

    def shutdown(self) -> None:
        self._closed = True
        for task in self._background:
            task.cancel()
        if self.executor is not None:
            self.executor.shutdown(wait=False, cancel_futures=True)
        # Processes are waited for (they are idle by now): a server that exits first leaves them running.
        for w in self._workers:
            w.stop(timeout=10.0)
        self._workers = []
