"""Stopped and killed prediction processes under load: requests failed and time to recover.

    python benchmarks/worker_faults.py --clients 4 --processes 3

Starts ``digitlab serve`` (the shipped model), runs ``--clients`` threads posting a canvas digit
in a loop, then, once for each fault, stops (SIGSTOP) or kills (SIGKILL) one prediction process
and records: requests answered and failed (by status) from the fault until ``/readyz`` is 200
again, the time that took, and the slowest ``/healthz`` polled every 0.1 s meanwhile. Prints JSON.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter

import httpx
from PIL import Image


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker_pids(server: int) -> list[int]:
    """The server's prediction processes (its spawned children, not multiprocessing's resource tracker)."""
    out = subprocess.run(["ps", "-o", "pid=,args=", "--ppid", str(server)], capture_output=True, text=True).stdout
    return sorted(int(line.split()[0]) for line in out.splitlines() if "spawn_main" in line)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--processes", type=int, default=3)
    args = ap.parse_args()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "digitlab", "serve", "--port", str(port), "--processes", str(args.processes)]
    server = subprocess.Popen([*cmd, "--log-level", "warning"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    img = Image.new("L", (96, 96))
    img.paste(255, (44, 10, 54, 86))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    body = {"image": "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()}
    statuses: Counter = Counter()
    stop = threading.Event()

    def client() -> None:
        with httpx.Client(base_url=base, timeout=60) as c:
            while not stop.is_set():
                try:
                    statuses[c.post("/api/predict", json=body).status_code] += 1
                except httpx.HTTPError as exc:
                    statuses[type(exc).__name__] += 1

    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                if httpx.get(base + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline and server.poll() is None, "server did not start"
            time.sleep(0.2)
        threads = [threading.Thread(target=client, daemon=True) for _ in range(args.clients)]
        for t in threads:
            t.start()
        time.sleep(3)
        results = {}
        for name, sig in (("stopped (SIGSTOP)", signal.SIGSTOP), ("killed (SIGKILL)", signal.SIGKILL)):
            before = dict(statuses)
            victim = worker_pids(server.pid)[0]
            t0 = time.monotonic()
            os.kill(victim, sig)
            slowest_health = 0.0
            while True:
                h0 = time.monotonic()
                health = httpx.get(base + "/healthz", timeout=30)
                slowest_health = max(slowest_health, time.monotonic() - h0)
                assert health.status_code == 200
                ready = httpx.get(base + "/readyz", timeout=30).status_code == 200
                if ready and victim not in worker_pids(server.pid) and time.monotonic() - t0 > 1:
                    break
                time.sleep(0.1)
            during = {str(k): v - before.get(k, 0) for k, v in statuses.items() if v - before.get(k, 0)}
            results[name] = {
                "recovered_s": round(time.monotonic() - t0, 2),
                "answers": during,
                "slowest_healthz_s": round(slowest_health, 3),
            }
            print(name, results[name], flush=True)
            time.sleep(2)
        stop.set()
        for t in threads:
            t.join(60)
        results["total"] = {str(k): v for k, v in statuses.items()}
        print(json.dumps(results, indent=2))
    finally:
        server.terminate()
        server.wait(30)


if __name__ == "__main__":
    main()
