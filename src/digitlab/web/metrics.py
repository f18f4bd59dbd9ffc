"""The web app's Prometheus metrics (``/metrics``), with the official ``prometheus-client`` library.

Each app has its own registry (tests build many apps in one process; the library's global one
would refuse the second). Routes are labelled by their template, and anything else as "other",
so a scan of random paths cannot grow the label set without bound.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

ROUTES = ("/", "/api/predict", "/api/model", "/healthz", "/livez", "/readyz", "/metrics")
# From the quickest answer (a canvas digit) to the request deadline (10 s), log-spaced.
LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)


class Metrics:
    """Requests and errors by route and status, latency, queue depth, worker restarts."""

    def __init__(self, queue_depth: Callable[[], float], workers_ready: Callable[[], float]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "digitlab_http_requests",
            "HTTP requests answered, by route and status",
            ["route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "digitlab_http_request_duration_seconds",
            "Time to answer a request, by route",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.restarts = Counter(
            "digitlab_worker_restarts", "Prediction processes replaced, by reason", ["reason"], registry=self.registry
        )
        queue = Gauge("digitlab_queue_depth", "Predictions running or waiting for a worker", registry=self.registry)
        queue.set_function(queue_depth)
        ready = Gauge(
            "digitlab_ready", "1 when every prediction process is loaded and warm, else 0", registry=self.registry
        )
        ready.set_function(workers_ready)

    def restarted(self, kind: str) -> None:
        """A prediction process was replaced: ``kind`` is "stuck", "died" or "interrupted"."""
        self.restarts.labels(kind).inc()


class MetricsMiddleware:
    """Counts every HTTP response by route and status and times it (the status as the client sees it)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        route = path if path in ROUTES else "/static" if path.startswith("/static/") else "other"
        status = 500  # an exception that escapes without a response is a 500 to the client
        start = time.perf_counter()

        async def timed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, timed)
        finally:
            self.metrics.requests.labels(route, str(status)).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - start)
