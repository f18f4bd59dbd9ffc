"""Where the web app's predictions run: a bounded pool of threads or of processes.

Threads share the one loaded model; on a small server they also share one core's worth
of Python (the GIL), and preprocessing is mostly Python-driven numpy. Processes each hold
a copy of the model (it is small) and use every core; the HTTP front stays in the server
process and sends them the image bytes. Either way a burst waits in a bounded queue, and
past it the caller gets ``ServerBusy`` (503).
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import threading
import time
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from digitlab.errors import DigitlabError
from digitlab.inference.image import load_image

log = logging.getLogger(__name__)

_predictor = None  # in a worker process: the predictor it was started with (see _start_worker)


class ServerBusy(Exception):
    """Every worker is busy and the queue is full."""


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


def _predict_in_worker(data: bytes, source: str, top_k: int, include_input: bool) -> dict:
    return predict_image(_predictor, data, source, top_k, include_input)


class InferencePool:
    """Runs predictions on ``workers`` threads, or ``processes`` processes, with at most
    ``max_queue`` waiting.

    A burst of requests queues here instead of starting unbounded work; past the queue the
    caller gets ``ServerBusy``. A slot is freed when its work really ends, even if the client
    has gone. Processes are started from a fresh interpreter (spawn) and receive the
    predictor pickled; one that dies is replaced with the whole pool, and its request fails.
    """

    def __init__(self, predictor, workers: int, max_queue: int, processes: int = 0) -> None:
        if workers < 1 or max_queue < 0 or processes < 0:
            raise DigitlabError(
                f"need workers >= 1, max_queue >= 0 and processes >= 0, got {workers}, {max_queue} and {processes}"
            )
        self.predictor = predictor
        self.processes = processes
        self.executor = self._executor(workers)
        self.slots = threading.BoundedSemaphore((processes or workers) + max_queue)

    def _executor(self, workers: int) -> Executor:
        if not self.processes:
            return ThreadPoolExecutor(max_workers=workers, thread_name_prefix="digitlab-predict")
        return ProcessPoolExecutor(
            max_workers=self.processes,
            mp_context=multiprocessing.get_context("spawn"),  # no fork of a process with torch's threads
            initializer=_start_worker,
            initargs=(self.predictor, os.getpid()),
        )

    def start(self) -> None:
        """Start every worker process now (loading the model), not on the first requests."""
        if self.processes:
            for f in [self.executor.submit(int) for _ in range(self.processes)]:
                f.result()

    async def predict(self, data: bytes, source: str, top_k: int, include_input: bool) -> dict:
        if not self.slots.acquire(blocking=False):
            raise ServerBusy
        executor = self.executor
        try:
            try:
                if self.processes:
                    future = executor.submit(_predict_in_worker, data, source, top_k, include_input)
                else:
                    future = executor.submit(predict_image, self.predictor, data, source, top_k, include_input)
            except BaseException:
                self.slots.release()
                raise
            future.add_done_callback(lambda _: self.slots.release())
            return await asyncio.wrap_future(future)
        except BrokenProcessPool:
            if self.executor is executor:  # the first request to see it replaces the pool
                log.error("a prediction process died; starting new ones")
                self.executor = self._executor(self.processes)
                executor.shutdown(wait=False, cancel_futures=True)
            raise

    def shutdown(self) -> None:
        # Processes are waited for (they are idle by now): a server that exits first leaves them running.
        self.executor.shutdown(wait=bool(self.processes), cancel_futures=True)
