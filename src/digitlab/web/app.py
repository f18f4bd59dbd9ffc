"""The web app: the drawing page and a small REST API around one loaded ``Predictor``.

``create_app()`` loads the model once and returns a FastAPI app; ``digitlab serve`` runs it
under uvicorn. Every image goes through ``decode_image`` and ``Predictor.predict`` — the
same path as ``digitlab predict`` — so the page and the CLI give the same answer.

Operations: ``/livez`` (the server answers), ``/readyz`` (every prediction process is loaded
and warm, none is being replaced), ``/healthz`` (the model's name), ``/metrics`` (Prometheus).
The OpenAPI schema is at ``/openapi.json``; the Swagger UI at ``/docs`` is off unless asked for,
since FastAPI's loads its script from a CDN.
"""

from __future__ import annotations

import base64
import binascii
import logging
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from digitlab.errors import DigitlabError
from digitlab.inference.image import MAX_PIXELS
from digitlab.inference.predictor import Predictor
from digitlab.web.metrics import Metrics, MetricsMiddleware
from digitlab.web.pool import REQUEST_DEADLINE_S, RETRY_AFTER_S, InferencePool, ServerBusy, WorkerDied
from digitlab.web.schemas import (
    MAX_TOP_K,
    ErrorResponse,
    Health,
    Liveness,
    ModelInfo,
    PredictRequest,
    PredictResponse,
    Readiness,
)

MAX_BODY_BYTES = 10 * 1024 * 1024  # a phone photo is 2-5 MB; a canvas PNG a few KB
DEFAULT_WORKERS = 2  # predictions running at once; one per core of a small server
MAX_QUEUE = 32  # predictions waiting for a worker before new ones get 503
IMAGE_TYPES = ("image/png", "image/jpeg", "image/gif", "image/bmp", "image/webp", "image/tiff")
STATIC_DIR = Path(__file__).parent / "static"
# The page loads nothing from elsewhere: this keeps it offline and keeps injected markup inert.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; "
    "style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}

log = logging.getLogger(__name__)

_ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": ErrorResponse} for code in (400, 413, 415, 422, 503)}
# /api/predict reads its body itself (multipart, JSON or raw image), so /docs is told here.
_PREDICT_BODY_DOC = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"file": {"type": "string", "format": "binary"}},
                    "required": ["file"],
                }
            },
            "application/json": {"schema": PredictRequest.model_json_schema()},
            "image/png": {"schema": {"type": "string", "format": "binary"}},
            "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}


class BodyTooLarge(Exception):
    """A request body over the limit (413)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"request body over {limit} bytes")


class BodyLimit:
    """Refuses request bodies over ``limit`` bytes before they are read into memory.

    A declared Content-Length is checked up front; a chunked body is counted as it
    arrives, and the read that crosses the limit raises ``BodyTooLarge``.
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length", b"0")
        if not length.isdigit() or int(length) > self.limit:
            await _error(413, str(BodyTooLarge(self.limit)))(scope, receive, send)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise BodyTooLarge(self.limit)
            return message

        await self.app(scope, counted, send)


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _decode_data_url(url: str) -> bytes:
    """``data:image/png;base64,...`` -> bytes; 415 for a non-image type, 400 when malformed."""
    header, comma, payload = url.partition(",")
    if not (comma and header.startswith("data:") and header.endswith(";base64")):
        raise HTTPException(400, "image must be a base64 data URL: data:image/png;base64,...")
    _check_type(header[5:])
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise HTTPException(400, "image data URL is not valid base64") from None


def _check_type(content_type: str | None) -> None:
    mime = (content_type or "").split(";")[0].strip().lower()
    if mime not in IMAGE_TYPES:
        raise HTTPException(415, f"unsupported type {mime or '(none)'!r}; send an image: {', '.join(IMAGE_TYPES)}")


async def _read_image(request: Request, include_input: bool, top_k: int) -> tuple[bytes, str, bool, int]:
    """The image bytes and options of a predict request, from any of the three body forms."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "multipart/form-data":
        async with request.form(max_files=1, max_fields=10) as form:
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                raise HTTPException(400, "multipart body needs a 'file' field with the image")
            _check_type(upload.content_type)
            return await upload.read(), upload.filename or "upload", include_input, top_k
    if ctype == "application/json":
        try:
            body = PredictRequest.model_validate_json(await request.body())
        except ValidationError as exc:
            raise RequestValidationError(exc.errors()) from None
        return _decode_data_url(body.image), "data-url", body.include_input, body.top_k
    _check_type(ctype)
    return await request.body(), "body", include_input, top_k


def _install_error_handlers(app: FastAPI) -> None:
    """Every error is JSON ``{"error": ...}``; a bug is logged here, never sent to the client."""

    @app.exception_handler(DigitlabError)
    async def bad_input(request: Request, exc: DigitlabError) -> JSONResponse:
        return _error(400, str(exc))

    @app.exception_handler(BodyTooLarge)
    async def too_large(request: Request, exc: BodyTooLarge) -> JSONResponse:
        return _error(413, str(exc))

    @app.exception_handler(ServerBusy)
    async def busy(request: Request, exc: ServerBusy) -> JSONResponse:
        return _error(503, str(exc), {"Retry-After": str(RETRY_AFTER_S)})

    @app.exception_handler(WorkerDied)
    async def died(request: Request, exc: WorkerDied) -> JSONResponse:
        # Logged where it died (the pool replaces the process); a native crash on this image, most likely.
        return _error(500, "the prediction process ended while reading this image")

    @app.exception_handler(ClientDisconnect)
    async def gone(request: Request, exc: ClientDisconnect) -> Response:
        log.info("client left during %s %s before sending its whole body", request.method, request.url.path)
        return Response(status_code=400)  # nobody reads it

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for e in exc.errors():  # "top_k: Input should be less than or equal to 10"
            where = ".".join(str(p) for p in e.get("loc", ()) if p not in ("body", "query")) or "body"
            problems.append(f"{where}: {e.get('msg', 'invalid')}")
        return _error(422, "; ".join(problems))

    @app.exception_handler(Exception)
    async def bug(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return _error(500, "internal server error")


def create_app(
    predictor: Predictor | None = None,
    *,
    checkpoint: str | Path | None = None,
    max_body_bytes: int = MAX_BODY_BYTES,
    workers: int = DEFAULT_WORKERS,
    max_queue: int = MAX_QUEUE,
    processes: int = 0,
    deadline_s: float = REQUEST_DEADLINE_S,
    allowed_hosts: list[str] | None = None,
    docs: bool = False,
) -> FastAPI:
    """Build the web app around one predictor, loaded here, once.

    Args:
        predictor: an already loaded predictor (tests inject one); else ``checkpoint`` is loaded.
        checkpoint: a checkpoint path; None loads the shipped default digit model.
        max_body_bytes: larger request bodies get 413.
        workers: predictions that run at once (threads), when ``processes`` is 0.
        max_queue: predictions that may wait for a worker; more get 503.
        processes: run the predictions in this many processes instead (one per core uses
            them all; each gets a copy of the predictor, so it must pickle).
        deadline_s: a request's longest time in the pool; past it the client gets 503 and a
            stuck process is replaced.
        allowed_hosts: the Host header names served (others get 400: DNS rebinding); None
            serves any.
        docs: serve the Swagger UI at /docs (its script comes from a CDN).
    """
    predictor = predictor if predictor is not None else Predictor.load(checkpoint=checkpoint)
    metrics = Metrics(lambda: pool.in_flight, lambda: float(pool.ready))
    pool = InferencePool(predictor, workers, max_queue, processes, deadline_s, on_restart=metrics.restarted)
    info = dict(predictor.info)
    limits = {"max_body_bytes": max_body_bytes, "max_pixels": MAX_PIXELS, "content_types": list(IMAGE_TYPES)}

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await pool.start()
        yield
        pool.shutdown()

    app = FastAPI(
        title="digitlab",
        summary=f"Handwritten-digit and image recognition with the model {info.get('name')!r}.",
        version="1",
        lifespan=lifespan,
        docs_url="/docs" if docs else None,
        redoc_url=None,
    )
    app.state.pool = pool  # for operators' tools and tests: its processes, readiness, queue
    app.state.metrics = metrics
    app.add_middleware(BodyLimit, limit=max_body_bytes)
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts or ["*"]))
    app.add_middleware(MetricsMiddleware, metrics=metrics)  # outermost: counts every answer, 400s for bad hosts too
    _install_error_handlers(app)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers=PAGE_HEADERS)

    @app.post(
        "/api/predict",
        response_model=PredictResponse,
        responses=_ERRORS,
        openapi_extra=_PREDICT_BODY_DOC,
        summary="Read the digits (or the class) in one image",
    )
    async def predict(
        request: Request,
        include_input: bool = Query(False, description="Multipart/raw bodies: return the 28x28 inputs"),
        top_k: int = Query(3, ge=1, le=MAX_TOP_K, description="Multipart/raw bodies: classes listed per item"),
    ) -> dict:
        """Send a multipart ``file``, a JSON ``{"image": "data:image/png;base64,..."}``, or the raw
        image bytes with an image Content-Type. A blank image answers status ``empty``."""
        start = time.perf_counter()
        data, source, include_input, top_k = await _read_image(request, include_input, top_k)
        out = await pool.predict(data, source, top_k, include_input)
        return {**out, "elapsed_ms": round((time.perf_counter() - start) * 1000, 2)}

    @app.get("/api/model", response_model=ModelInfo, summary="The loaded model and the request limits")
    async def model() -> dict:
        return {**info, "limits": limits}

    @app.get("/healthz", response_model=Health, summary="The server answers and its model is loaded")
    async def healthz() -> dict:
        return {"status": "ok", "model": str(info.get("name"))}

    @app.get("/livez", response_model=Liveness, summary="Liveness: the server's event loop answers")
    async def livez() -> dict:
        return {"status": "ok"}

    @app.get(
        "/readyz",
        response_model=Readiness,
        responses={503: {"model": Readiness}},
        summary="Readiness: every prediction process has loaded and warmed the model, none is being replaced",
    )
    async def readyz() -> JSONResponse:
        if pool.ready:
            return JSONResponse({"status": "ready"})
        return JSONResponse({"status": "not ready"}, status_code=503, headers={"Retry-After": str(RETRY_AFTER_S)})

    @app.get("/metrics", include_in_schema=False)
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app
