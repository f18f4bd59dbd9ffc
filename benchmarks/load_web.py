"""Load check of the web API: concurrent clients posting single digits, on loopback.

    python benchmarks/load_web.py                      # 8 clients, 30 s, the shipped model
    python benchmarks/load_web.py --clients 1 --duration 10
    python benchmarks/load_web.py --processes 2 --workers 1 --model runs/x/best.pt

Starts ``digitlab serve`` in its own process on a free loopback port, warms it up, then runs
``--clients`` clients, each with its own keep-alive connection and each sending its next
request only when the previous one was answered. They post distinct MNIST test digits the
way the page sends them: its 280x280 canvas scaled to a 96x96 PNG (RGBA, as a browser's
``toDataURL`` writes it) as a JSON data URL, with the 28x28 model input requested back. Every answer's status
and label are checked. Every client stops at ``--duration`` seconds or ``--max-requests``,
whichever comes first. Reports errors, misreads, p50/p90/p99 latency, requests/s, the
CPU time the server and this generator used per request, and the resident memory of the server
and of each prediction process after the warm-up and at the end; exits 1 if any request failed.

The clients are asyncio coroutines writing HTTP/1.1 on raw sockets, in one thread: a
load generator that takes the CPU it measures distorts the measurement, and on a 2-core
machine httpx in threads took a third of it.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import platform
import socket
import statistics
import struct
import subprocess
import sys
import time
import zlib
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

PATH = "/api/predict"
SENT_SIDE = 96  # the page sends its drawing at this size (app.js SENT_SIDE)


def browser_png(rgba: np.ndarray) -> bytes:
    """An RGBA image (H, W, 4) encoded the way Chrome's ``canvas.toDataURL("image/png")`` does.

    Chrome (checked on Debian's chromium with a 280x280 canvas) writes 8-bit RGBA, filter
    "Up" on every row and zlib's fastest level. Pillow picks filters per row (mostly Paeth)
    and its files of the same pixels decode slower, so they would not be the page's load.
    """
    h, w, _ = rgba.shape
    rows = rgba.reshape(h, w * 4)
    filtered = np.empty((h, 1 + w * 4), dtype=np.uint8)
    filtered[:, 0] = 2  # filter type Up: each byte minus the one above it
    filtered[0, 1:] = rows[0]
    filtered[1:, 1:] = rows[1:] - rows[:-1]  # uint8 arithmetic wraps modulo 256, as PNG wants

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", w, h, 8, 6, 0, 0, 0)  # 8-bit RGBA, deflate, no interlace
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(filtered.tobytes(), 1))
        + chunk(b"IEND", b"")
    )


def canvas_png(digit: np.ndarray) -> bytes:
    """A 28x28 MNIST digit as the page sends a drawing: the 280x280 canvas, white on opaque black,
    scaled to SENT_SIDE (app.js ``canvasDataUrl``; area averaging stands in for the browser's smoothing)."""
    gray = np.asarray(Image.fromarray(digit).resize((280, 280), Image.BILINEAR).resize((SENT_SIDE,) * 2, Image.BOX))
    rgba = np.empty((SENT_SIDE, SENT_SIDE, 4), dtype=np.uint8)
    rgba[..., :3] = gray[..., None]
    rgba[..., 3] = 255
    return browser_png(rgba)


def predict_body(png: bytes, top_k: int = 3) -> bytes:
    """The page's JSON request body for one canvas PNG."""
    url = "data:image/png;base64," + base64.b64encode(png).decode()
    return json.dumps({"image": url, "include_input": True, "top_k": top_k}).encode()


def canvas_payloads(data_dir: str | None, count: int) -> list[tuple[bytes, str]]:
    """(JSON body, true label) for the first ``count`` MNIST test digits, as canvas PNGs."""
    from digitlab.data import load_dataset

    data = load_dataset("mnist", data_dir, download=False, progress=False)
    return [
        (predict_body(canvas_png(x[0].numpy())), str(int(y)))
        for x, y in zip(data.test_x[:count], data.test_y[:count], strict=True)
    ]


def http_request(host: str, port: int, body: bytes, path: str = PATH) -> bytes:
    """One keep-alive HTTP/1.1 POST of a JSON body, as bytes on the wire."""
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: keep-alive\r\n\r\n"
    )
    return head.encode() + body


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """(status, body) of one HTTP/1.1 response with a Content-Length (what uvicorn sends)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    length = None
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value)
    if length is None:
        raise ValueError("response without Content-Length")
    return status, await reader.readexactly(length)


@dataclass
class ClientStats:
    """What one client saw: latencies of good answers, errors by kind, misreads."""

    latencies_ms: list[float] = field(default_factory=list)
    server_ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    wrong: int = 0


def check_answer(status: int, body: bytes, label: str, stats: ClientStats, latency_ms: float) -> None:
    """Count one answer: 200 with a JSON prediction is a success (a misread if the label differs)."""
    if status != 200:
        stats.errors.append(str(status))
        return
    try:
        answer = json.loads(body)
        text, server_ms = answer["text"], float(answer["elapsed_ms"])
    except (ValueError, KeyError, TypeError):
        stats.errors.append("bad-json")
        return
    stats.latencies_ms.append(latency_ms)
    stats.server_ms.append(server_ms)
    stats.wrong += text != label


async def client(
    host: str,
    port: int,
    requests: list[tuple[bytes, str]],
    deadline: float,
    max_requests: int,
    start_at: int,
    stats: ClientStats,
) -> None:
    """One client on one keep-alive connection: the next request only when the previous is answered."""
    reader = writer = None
    i, sent = start_at, 0
    try:
        while time.perf_counter() < deadline and sent < max_requests:
            wire, label = requests[i % len(requests)]
            i += 1
            sent += 1
            t0 = time.perf_counter()
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection(host, port)
                writer.write(wire)
                status, body = await read_response(reader)
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
                stats.errors.append(type(exc).__name__)
                if writer is not None:
                    writer.close()
                reader = writer = None  # reconnect for the next request
                continue
            check_answer(status, body, label, stats, (time.perf_counter() - t0) * 1000)
    finally:
        if writer is not None:
            writer.close()


async def run_clients(
    host: str, port: int, payloads: list[tuple[bytes, str]], *, clients: int, duration: float, max_requests: int
) -> tuple[list[ClientStats], float]:
    """Run ``clients`` clients at once; returns each one's stats and the wall time."""
    requests = [(http_request(host, port, body), label) for body, label in payloads]
    stats = [ClientStats() for _ in range(clients)]
    start = time.perf_counter()
    deadline = start + duration
    # Each client starts at its own place in the digits, so the server sees distinct images.
    await asyncio.gather(
        *(
            client(host, port, requests, deadline, max_requests, k * len(requests) // clients, stats[k])
            for k in range(clients)
        )
    )
    return stats, time.perf_counter() - start


def percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q / 100 * (len(s) - 1))))]


def summarize(stats: list[ClientStats], wall: float) -> dict:
    """Counts, latency percentiles and throughput over all clients."""
    lat = [x for s in stats for x in s.latencies_ms]
    srv = [x for s in stats for x in s.server_ms]
    errors = [e for s in stats for e in s.errors]
    ms = lambda v: round(v, 1) if lat else None  # noqa: E731
    return {
        "clients": len(stats),
        "duration_s": round(wall, 1),
        "requests": len(lat) + len(errors),
        "errors": len(errors),
        "error_kinds": sorted(set(errors)),
        "wrong_answers": sum(s.wrong for s in stats),
        "requests_per_s": round(len(lat) / wall, 1) if wall > 0 else None,
        "p50_ms": ms(statistics.median(lat)) if lat else None,
        "p90_ms": ms(percentile(lat, 90)) if lat else None,
        "p99_ms": ms(percentile(lat, 99)) if lat else None,
        "server_p50_ms": round(statistics.median(srv), 1) if srv else None,
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(port: int, args) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "digitlab", "serve", "--port", str(port), "--log-level", "warning"]
    if args.workers:
        cmd += ["--workers", str(args.workers)]
    if args.processes is not None:  # 0 (threads) too
        cmd += ["--processes", str(args.processes)]
    if args.model:
        cmd += ["--model", args.model]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}: {proc.stderr.read()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("server did not start within 120 s")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its waited-for and live children (Linux /proc)."""
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    pids = [pid]
    while pids:
        p = pids.pop()
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += sum(int(v) for v in fields[11:15]) / tick  # utime stime cutime cstime
            for task in os.listdir(f"/proc/{p}/task"):  # children started by any of its threads
                with open(f"/proc/{p}/task/{task}/children") as f:
                    pids += [int(c) for c in f.read().split()]
        except (OSError, ValueError):
            continue
    return total


def rss_mb(pid: int) -> dict:
    """Resident memory (MB) of the server process and of each of its children (the prediction processes)."""

    def one(p: int) -> float | None:
        try:
            with open(f"/proc/{p}/status") as f:
                kb = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
            return round(kb / 1024, 1)
        except (OSError, StopIteration, ValueError):
            return None

    children: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                children += [int(c) for c in f.read().split()]
    except OSError:
        pass

    def is_worker(p: int) -> bool:  # a prediction process, not multiprocessing's resource tracker
        try:
            with open(f"/proc/{p}/cmdline", "rb") as f:
                return b"spawn_main" in f.read()
        except OSError:
            return False

    return {"server": one(pid), "workers": [one(c) for c in sorted(children) if is_worker(c)]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--duration", type=float, default=30.0, help="seconds of load")
    ap.add_argument("--max-requests", type=int, default=1_000_000, help="per client, a bound on the loop")
    ap.add_argument("--workers", type=int, default=None, help="digitlab serve --workers (default: its own)")
    ap.add_argument("--processes", type=int, default=None, help="digitlab serve --processes (default: its own)")
    ap.add_argument("--model", default=None, help="checkpoint; default: the shipped model")
    ap.add_argument("--data-dir", default=None, help="folder with MNIST (default: $DIGITLAB_DATA, then the cache)")
    ap.add_argument("--digits", type=int, default=200, help="distinct test digits to cycle through")
    args = ap.parse_args(argv)

    from digitlab.errors import DigitlabError

    load_before = os.getloadavg()
    try:
        payloads = canvas_payloads(args.data_dir, args.digits)
    except DigitlabError as exc:
        raise SystemExit(f"error: {exc}") from None
    port = free_port()
    server = start_server(port, args)
    try:
        # Warm-up: the first calls pay for lazy initialisation (in every server process).
        asyncio.run(run_clients("127.0.0.1", port, payloads, clients=args.clients, duration=60, max_requests=10))
        server_cpu, own_cpu = cpu_seconds(server.pid), time.process_time()
        rss_start = rss_mb(server.pid)
        stats, wall = asyncio.run(
            run_clients(
                "127.0.0.1",
                port,
                payloads,
                clients=args.clients,
                duration=args.duration,
                max_requests=args.max_requests,
            )
        )
        server_cpu, own_cpu = cpu_seconds(server.pid) - server_cpu, time.process_time() - own_cpu
        rss_end = rss_mb(server.pid)
    finally:
        server.terminate()
        server.wait(timeout=30)

    summary = summarize(stats, wall)
    answered = max(1, summary["requests"])
    summary.update(
        server_cpu_ms_per_request=round(server_cpu * 1000 / answered, 2),
        client_cpu_ms_per_request=round(own_cpu * 1000 / answered, 2),
        server=" ".join(f"--{k} {getattr(args, k)}" for k in ("processes", "workers") if getattr(args, k) is not None)
        or "defaults",
        machine=f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.python_implementation()} {platform.python_version()}",
        load_average_before=[round(x, 2) for x in load_before],
        rss_mb_start=rss_start,
        rss_mb_end=rss_end,
    )
    print(json.dumps(summary, indent=2))
    print(
        "zero errors: "
        + ("yes" if not summary["errors"] else f"NO ({summary['errors']}: {', '.join(summary['error_kinds'])})")
    )
    return 0 if not summary["errors"] and summary["requests"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
