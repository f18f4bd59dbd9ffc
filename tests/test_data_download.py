"""Downloads against a local HTTP server on 127.0.0.1 (data/download.py)."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import socket
import threading
from pathlib import Path

import numpy as np
import pytest

from digitlab.data import load_dataset
from digitlab.data.download import checksum_ok, download_dataset, download_file, mirrors_for
from digitlab.errors import DigitlabError
from test_data_mnist import STEMS, idx_bytes


def md5(b: bytes) -> str:
    return hashlib.md5(b).hexdigest()


@pytest.fixture
def server(tmp_path):
    """Serves tmp_path/www over HTTP on an ephemeral loopback port; yields (base_url, folder)."""
    www = tmp_path / "www"
    www.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=str(www), **kw)

        def log_message(self, *args):
            pass

        def do_GET(self):
            if self.path.endswith("/short.bin"):  # promises 1000 bytes, sends 10, hangs up
                self.send_response(200)
                self.send_header("Content-Length", "1000")
                self.end_headers()
                self.wfile.write(b"0123456789")
                self.close_connection = True
                return
            super().do_GET()

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/", www
    finally:
        httpd.shutdown()
        httpd.server_close()


def dead_url() -> str:
    """A loopback port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_download_file_ok(server, tmp_path):
    base, www = server
    payload = b"hello digits" * 1000
    (www / "f.bin").write_bytes(payload)
    out = download_file("f.bin", tmp_path / "dl", [base], md5(payload), progress=True)
    assert out.read_bytes() == payload and leftovers(tmp_path / "dl") == ["f.bin"]


def test_checksum_mismatch_leaves_nothing(server, tmp_path):
    base, www = server
    (www / "f.bin").write_bytes(b"tampered")
    with pytest.raises(DigitlabError, match="f.bin(.|\n)*checksum mismatch"):
        download_file("f.bin", tmp_path / "dl", [base], md5(b"original"), progress=False)
    assert leftovers(tmp_path / "dl") == []


def test_interrupted_download_leaves_nothing(server, tmp_path):
    base, _ = server
    with pytest.raises(DigitlabError, match="short.bin"):
        download_file("short.bin", tmp_path / "dl", [base], None, progress=False, timeout=5)
    assert leftovers(tmp_path / "dl") == []


def test_falls_back_to_next_mirror(server, tmp_path):
    base, www = server
    (www / "f.bin").write_bytes(b"ok")
    out = download_file("f.bin", tmp_path, [dead_url(), base + "missing/", base], md5(b"ok"), progress=False)
    assert out.read_bytes() == b"ok"


def test_server_down_is_a_clear_error(tmp_path):
    url = dead_url()
    with pytest.raises(DigitlabError) as exc:
        download_file("f.bin", tmp_path / "dl", [url], None, progress=False, timeout=5)
    assert "could not download f.bin" in str(exc.value) and url in str(exc.value)
    assert leftovers(tmp_path / "dl") == []


def test_http_404(server, tmp_path):
    base, _ = server
    with pytest.raises(DigitlabError, match="HTTP 404"):
        download_file("absent.gz", tmp_path, [base], None, progress=False)


def test_gz_checksum_of_decompressed_content_is_accepted(tmp_path):
    content = idx_bytes(np.arange(10, dtype=np.uint8))
    p = tmp_path / "labels.gz"
    p.write_bytes(gzip.compress(content, mtime=0))
    assert checksum_ok(p, ("0" * 32, md5(content)))
    assert checksum_ok(p, md5(p.read_bytes()))
    assert not checksum_ok(p, "0" * 32)


def test_mirrors_from_env(monkeypatch):
    monkeypatch.setenv("DIGITLAB_MIRRORS", "http://a/, http://b/")
    assert mirrors_for("mnist") == ["http://a/", "http://b/"]
    assert mirrors_for("mnist", ["http://c/"]) == ["http://c/"]
    monkeypatch.delenv("DIGITLAB_MIRRORS")
    assert mirrors_for("mnist")[0].startswith("https://ossci-datasets")


def serve_tiny_mnist(www: Path) -> dict[str, str]:
    rng = np.random.default_rng(0)
    arrays = [
        rng.integers(0, 256, (10, 28, 28), dtype=np.uint8),
        (np.arange(10) % 10).astype(np.uint8),
        rng.integers(0, 256, (4, 28, 28), dtype=np.uint8),
        np.arange(4).astype(np.uint8),
    ]
    sums = {}
    for stem, arr in zip(STEMS, arrays):
        gz = gzip.compress(idx_bytes(arr))
        (www / (stem + ".gz")).write_bytes(gz)
        sums[stem + ".gz"] = md5(gz)
    return sums


def test_download_dataset_then_load(server, tmp_path, isolated_data_env, monkeypatch):
    base, www = server
    sums = serve_tiny_mnist(www)
    dest = tmp_path / "data" / "mnist"
    paths = download_dataset("mnist", dest, mirrors=[base], checksums=sums, progress=False)
    assert sorted(p.name for p in paths) == sorted(sums) == leftovers(dest)
    data = load_dataset("mnist", tmp_path / "data", download=False)
    assert data.train_x.shape == (10, 1, 28, 28) and data.test_y.tolist() == [0, 1, 2, 3]
    # present and valid: nothing is fetched again (the server can go away)
    (www / (STEMS[0] + ".gz")).unlink()
    download_dataset("mnist", dest, mirrors=[base], checksums=sums, progress=False)


def test_load_dataset_downloads_into_cache(server, isolated_data_env, monkeypatch):
    """End to end through load_dataset: the official checksums reject the tiny stand-ins."""
    base, www = server
    serve_tiny_mnist(www)
    monkeypatch.setenv("DIGITLAB_MIRRORS", base)
    with pytest.raises(DigitlabError) as exc:
        load_dataset("mnist", progress=False)
    msg = str(exc.value)
    assert "checksum mismatch" in msg and "train-images-idx3-ubyte.gz" in msg and str(isolated_data_env) in msg
    assert leftovers(isolated_data_env / "mnist") == []


def test_offline_error_says_what_to_put_where(tmp_path, isolated_data_env, monkeypatch):
    monkeypatch.setenv("DIGITLAB_MIRRORS", dead_url())
    with pytest.raises(DigitlabError) as exc:
        load_dataset("fashion-mnist", tmp_path / "d", progress=False)
    msg = str(exc.value)
    assert "could not download" in msg and "fashion-mnist files not found" in msg
    assert "t10k-labels-idx1-ubyte.gz" in msg and str(tmp_path / "d") in msg
