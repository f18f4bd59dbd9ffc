"""`digitlab serve`: the drawing page and the REST API under uvicorn."""

from __future__ import annotations

import errno
import ipaddress
import socket
from pathlib import Path

import typer

from digitlab.cli.app import app
from digitlab.cli.output import Console
from digitlab.errors import DigitlabError

LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")


def _url(host: str, port: int) -> str:
    """The address to open in a browser (a wildcard bind is reached through loopback)."""
    shown = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    return f"http://[{shown}]:{port}/" if ":" in shown else f"http://{shown}:{port}/"


def served_names(host: str, loopback: bool) -> list[str]:
    """The Host header names a server bound to ``host`` answers: its address, plus localhost on loopback.

    A wildcard bind (0.0.0.0, ::) can be reached under any name, so it allows any unless told.
    """
    if host in ("0.0.0.0", "::", ""):
        return ["*"]
    names = [host.strip("[]")]
    if loopback:
        names += ["localhost", "127.0.0.1"]
    return list(dict.fromkeys(names))


def check_port(host: str, port: int) -> None:
    """Refuse a port that cannot be bound (in use, or privileged) before the model loads and before
    "serving on ..." is printed; uvicorn would only fail after both. Binds as uvicorn does (SO_REUSEADDR)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise DigitlabError(f"cannot serve on --host {host}: {exc.strerror}") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as exc:
            why = "is in use (another server?)" if exc.errno == errno.EADDRINUSE else f"cannot be used: {exc.strerror}"
            raise DigitlabError(f"port {port} on {host} {why}; pass --port with a free one") from None


@app.command()
def serve(
    model: Path | None = typer.Option(
        None, "--model", help="Checkpoint, run folder or .onnx file to serve; default: the shipped digit model."
    ),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind; 0.0.0.0 opens it to the network."),
    port: int = typer.Option(8000, "--port", min=1, max=65535, help="TCP port."),
    processes: int | None = typer.Option(
        None,
        "--processes",
        min=0,
        help="Prediction processes; default: one per core plus one (at most 8). 0: threads in the server process.",
    ),
    workers: int | None = typer.Option(
        None,
        "--workers",
        min=1,
        help="Prediction threads in the server process (alone, it means --processes 0); default 2.",
    ),
    log_level: str = typer.Option(
        "info", "--log-level", help="uvicorn log level: critical, error, warning, info, debug, trace."
    ),
    allow_host: list[str] | None = typer.Option(
        None,
        "--allow-host",
        help="A Host name clients may use (repeat it); default: the --host address and, on loopback, localhost. "
        "Other names get 400 (DNS rebinding). '*' allows any.",
    ),
    docs: bool = typer.Option(False, "--docs", help="Serve the Swagger UI at /docs (it loads its script from a CDN)."),
) -> None:
    """Serve the drawing page and the REST API.

    The API's schema is at /openapi.json.
    """
    if log_level not in LOG_LEVELS:
        raise DigitlabError(f"unknown log level {log_level!r}; choose one of: {', '.join(LOG_LEVELS)}")
    check_port(host, port)
    import uvicorn

    from digitlab.inference.onnx import set_threads
    from digitlab.web.app import DEFAULT_WORKERS, create_app
    from digitlab.web.connections import KEEP_ALIVE_S, deadline_protocol
    from digitlab.web.pool import default_processes

    # Requests run in parallel on the workers; torch's own threads on top of them only wait
    # for each other (a sub-millisecond forward takes many times longer with 2 intra-op threads on a busy
    # 2-core box). A PyTorch model gets the setting when the predictor loads it.
    set_threads(1)

    console = Console(stderr=True)
    # Loads the model now, so errors show before binding; prediction processes start with the server.
    if processes is None:
        # --workers alone: that many prediction threads and no processes
        processes = 0 if workers else default_processes()
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    web = create_app(
        checkpoint=model,
        workers=workers or DEFAULT_WORKERS,
        processes=processes,
        allowed_hosts=allow_host or served_names(host, loopback),
        docs=docs,
    )
    if not loopback:
        console.print(f"[yellow]warning:[/] listening on {host}: anyone who can reach this machine can use the app")
    runs_on = f"{processes} prediction processes" if processes else f"{workers or DEFAULT_WORKERS} prediction threads"
    print(
        f"digitlab: serving on {_url(host, port)}  (API schema: {_url(host, port)}openapi.json; {runs_on}; "
        "Ctrl+C stops)",
        flush=True,
    )
    # Read deadlines for each request's head and body (slow clients are cut off), uvicorn's keep-alive.
    uvicorn.run(
        web, host=host, port=port, log_level=log_level, http=deadline_protocol(), timeout_keep_alive=KEEP_ALIVE_S
    )
