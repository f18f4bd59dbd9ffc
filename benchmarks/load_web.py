"""Load check of the web API: concurrent clients posting single digits, on loopback.

    python benchmarks/load_web.py                      # 8 clients, 30 s, the shipped model
    python benchmarks/load_web.py --clients 8 --duration 30 --workers 2 --model runs/x/best.pt

Starts ``digitlab serve`` in its own process on a free loopback port, warms it up, then runs
``--clients`` threads, each with its own keep-alive connection, posting MNIST test digits
drawn the way the page sends them (a 280x280 canvas PNG as a JSON data URL, with the 28x28
input requested). Every client stops at ``--duration`` seconds or ``--max-requests``,
whichever comes first. Reports errors, p50/p90/p99 latency and requests/s with the
machine; exits 1 if any request failed.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import threading
import time

import httpx
from PIL import Image

from digitlab.data import load_dataset
from digitlab.errors import DigitlabError


def canvas_payloads(data_dir: str | None, count: int) -> list[tuple[bytes, str]]:
    """(JSON body, true label) for the first ``count`` MNIST test digits, as canvas PNGs."""
    data = load_dataset("mnist", data_dir, download=False, progress=False)
    out = []
    for x, y in zip(data.test_x[:count], data.test_y[:count]):
        img = Image.fromarray(x[0].numpy()).resize((280, 280), Image.BILINEAR)  # the page's canvas size
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        url = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
        out.append((json.dumps({"image": url, "include_input": True, "top_k": 3}).encode(), str(int(y))))
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(port: int, workers: int, model: str | None) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "digitlab", "serve", "--port", str(port), "--workers", str(workers), "--log-level", "warning"]
    if model:
        cmd += ["--model", model]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}: {proc.stderr.read()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("server did not start within 120 s")


def client(url: str, payloads, deadline: float, max_requests: int, start_at: int, out: dict) -> None:
    """One client: post digits back to back until the deadline; record latency and outcome."""
    latencies, errors, wrong, server_ms = [], [], 0, []
    headers = {"Content-Type": "application/json"}
    with httpx.Client(timeout=10) as http:
        i = start_at
        while time.perf_counter() < deadline and len(latencies) + len(errors) < max_requests:
            body, label = payloads[i % len(payloads)]
            i += 1
            t0 = time.perf_counter()
            try:
                r = http.post(url, content=body, headers=headers)
            except httpx.HTTPError as exc:
                errors.append(type(exc).__name__)
                continue
            dt = (time.perf_counter() - t0) * 1000
            if r.status_code != 200:
                errors.append(str(r.status_code))
                continue
            answer = r.json()
            latencies.append(dt)
            server_ms.append(answer["elapsed_ms"])
            wrong += answer["text"] != label
    out.update(latencies=latencies, errors=errors, wrong=wrong, server_ms=server_ms)


def percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q / 100 * (len(s) - 1))))]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--duration", type=float, default=30.0, help="seconds of load")
    ap.add_argument("--max-requests", type=int, default=100_000, help="per client, a bound on the loop")
    ap.add_argument("--workers", type=int, default=2, help="the server's inference threads (digitlab serve --workers)")
    ap.add_argument("--model", default=None, help="checkpoint; default: the shipped model")
    ap.add_argument("--data-dir", default=None, help="folder with MNIST (default: $DIGITLAB_DATA, then the cache)")
    ap.add_argument("--digits", type=int, default=200, help="distinct test digits to cycle through")
    args = ap.parse_args(argv)

    try:
        payloads = canvas_payloads(args.data_dir, args.digits)
    except DigitlabError as exc:
        raise SystemExit(f"error: {exc}") from None
    port = free_port()
    url = f"http://127.0.0.1:{port}/api/predict"
    server = start_server(port, args.workers, args.model)
    try:
        with httpx.Client(timeout=10) as http:  # warm-up: first calls pay for lazy initialisation
            for body, _ in payloads[:20]:
                http.post(url, content=body, headers={"Content-Type": "application/json"}).raise_for_status()
        results = [{} for _ in range(args.clients)]
        start = time.perf_counter()
        deadline = start + args.duration
        threads = [
            threading.Thread(target=client, args=(url, payloads, deadline, args.max_requests, k * 17, results[k]))
            for k in range(args.clients)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - start
    finally:
        server.terminate()
        server.wait(timeout=30)

    lat = [x for r in results for x in r["latencies"]]
    srv = [x for r in results for x in r["server_ms"]]
    errors = [e for r in results for e in r["errors"]]
    summary = {
        "clients": args.clients,
        "duration_s": round(wall, 1),
        "workers": args.workers,
        "requests": len(lat) + len(errors),
        "errors": len(errors),
        "error_kinds": sorted(set(errors)),
        "wrong_answers": sum(r["wrong"] for r in results),
        "requests_per_s": round(len(lat) / wall, 1),
        "p50_ms": round(statistics.median(lat), 1) if lat else None,
        "p90_ms": round(percentile(lat, 90), 1) if lat else None,
        "p99_ms": round(percentile(lat, 99), 1) if lat else None,
        "server_p50_ms": round(statistics.median(srv), 1) if srv else None,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.python_implementation()} {platform.python_version()}",
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
    }
    print(json.dumps(summary, indent=2))
    print("zero errors: " + ("yes" if not errors else f"NO ({len(errors)}: {', '.join(summary['error_kinds'])})"))
    return 0 if not errors and lat else 1


if __name__ == "__main__":
    raise SystemExit(main())
