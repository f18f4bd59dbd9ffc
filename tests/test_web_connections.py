"""HTTP hygiene under a real uvicorn: read deadlines (slowloris), Host check, clients that leave mid-body."""

from __future__ import annotations

import logging
import socket
import threading
import time

import pytest
import uvicorn
from PIL import Image

from conftest import StandIn, png
from digitlab.web.app import create_app
from digitlab.web.connections import deadline_protocol


@pytest.fixture
def server():
    """A served app (threads, a stand-in model) with 1 s read deadlines; yields its port."""
    app = create_app(StandIn(), allowed_hosts=["127.0.0.1", "localhost"])
    config = uvicorn.Config(
        app, host="127.0.0.1", port=0, log_level="warning", http=deadline_protocol(head_s=1.0, body_s=1.5)
    )
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not (srv.started and srv.servers):
        assert time.monotonic() < deadline and thread.is_alive(), "server did not start"
        time.sleep(0.05)
    yield srv.servers[0].sockets[0].getsockname()[1]
    srv.should_exit = True
    thread.join(10)


def request(port: int, raw: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(raw)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


def closed_by_server(s: socket.socket) -> bool:
    try:
        return s.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_200_slowloris_connections_are_closed(server):
    conns = []
    for _ in range(200):
        s = socket.create_connection(("127.0.0.1", server), timeout=10)
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-a: ")  # a head that never ends
        conns.append(s)
    time.sleep(0.6)
    for s in conns[:20]:
        s.sendall(b"b")  # a byte now and then must not keep a connection open
    try:
        assert all(closed_by_server(s) for s in conns)  # each recv waits until the server closes it
    finally:
        for s in conns:
            s.close()
    answer = request(server, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200")  # the server is fine


def test_a_body_that_never_ends_is_cut_off(server):
    with socket.create_connection(("127.0.0.1", server), timeout=10) as s:
        s.sendall(
            b"POST /api/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\nContent-Length: 5000\r\n\r\n"
        )
        s.sendall(b"\x89PNG")
        assert closed_by_server(s) or s.recv(65536) == b""


def test_a_client_that_leaves_mid_body_logs_no_error(server, caplog):
    caplog.set_level(logging.INFO)
    with socket.create_connection(("127.0.0.1", server), timeout=10) as s:
        s.sendall(
            b"POST /api/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\nContent-Length: 9000\r\n\r\n"
        )
        s.sendall(png(Image.new("L", (8, 8)))[:40])
    time.sleep(0.5)
    answer = request(server, b"GET /livez HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200")
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    assert "Traceback" not in caplog.text


def test_an_unknown_host_name_is_refused(server):
    good = request(server, b"GET /healthz HTTP/1.1\r\nHost: localhost:8000\r\nConnection: close\r\n\r\n")
    evil = request(server, b"GET /healthz HTTP/1.1\r\nHost: attacker.example\r\nConnection: close\r\n\r\n")
    assert good.startswith(b"HTTP/1.1 200")
    assert evil.startswith(b"HTTP/1.1 400")
