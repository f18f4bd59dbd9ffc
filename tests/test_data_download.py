"""Downloads against a local HTTP server on 127.0.0.1 (data/download.py)."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import STEMS, idx_bytes
from digitlab.data import load_dataset
from digitlab.data.download import (
    MAX_BYTES,
    Limits,
    checksum_ok,
    download_dataset,
    download_file,
    fcntl,
    max_bytes_for,
    mirrors_for,
    remove_stale_parts,
)
from digitlab.errors import DigitlabError


def md5(b: bytes) -> str:
    return hashlib.md5(b).hexdigest()


@pytest.fixture
def server(tmp_path):
    """Serves tmp_path/www over HTTP on an ephemeral loopback port; yields (base_url, folder).

    Besides the folder's files: short.bin (hangs up early), drip.bin (a byte every 20 ms),
    hang.bin (100 bytes, then nothing until the test ends), endless.bin (chunked, no length, never ends).
    """
    www = tmp_path / "www"
    www.mkdir()
    stop = threading.Event()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=str(www), **kw)

        def log_message(self, *args):
            pass

        def do_GET(self):
            if self.path == "/short.bin":  # promises 1000 bytes, sends 10, hangs up
                self.send_response(200)
                self.send_header("Content-Length", "1000")
                self.end_headers()
                self.wfile.write(b"0123456789")
                self.close_connection = True
                return
            if self.path == "/drip.bin":
                self.send_response(200)
                self.send_header("Content-Length", "1000")
                self.end_headers()
                for _ in range(1000):
                    if stop.wait(0.02):
                        return
                    self.wfile.write(b"x")
                    self.wfile.flush()
                return
            if self.path == "/hang.bin":
                self.send_response(200)
                self.send_header("Content-Length", str(10**6))
                self.end_headers()
                self.wfile.write(b"x" * 100)
                self.wfile.flush()
                stop.wait(30)
                return
            if self.path == "/endless.bin":
                self.send_response(200)
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                chunk = b"%x\r\n%s\r\n" % (1 << 16, bytes(1 << 16))
                while not stop.is_set():
                    try:
                        self.wfile.write(chunk)
                    except OSError:
                        return
                return
            super().do_GET()

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/", www
    finally:
        stop.set()
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
    for stem, arr in zip(STEMS, arrays, strict=True):
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
    assert (isolated_data_env / "mnist").is_dir() and leftovers(isolated_data_env / "mnist") == []  # cache made


def test_offline_error_says_what_to_put_where(tmp_path, isolated_data_env, monkeypatch):
    monkeypatch.setenv("DIGITLAB_MIRRORS", dead_url())
    (tmp_path / "d").mkdir()
    with pytest.raises(DigitlabError) as exc:
        load_dataset("fashion-mnist", tmp_path / "d", progress=False)
    msg = str(exc.value)
    assert "could not download" in msg and "fashion-mnist files not found" in msg
    assert "t10k-labels-idx1-ubyte.gz" in msg and str(tmp_path / "d") in msg


# --- hostile mirrors and killed downloads (issue 14, item 8) ------------------------------


def test_recompressed_gz_is_accepted_on_a_fresh_download(server, tmp_path):
    """The official content in another .gz: the content md5 is checked on the temporary file too."""
    base, www = server
    content = idx_bytes(np.arange(100, dtype=np.uint8))
    (www / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(content, compresslevel=1, mtime=1))
    dl = tmp_path / "dl"
    out = download_file("t10k-labels-idx1-ubyte.gz", dl, [base], ("0" * 32, md5(content)), progress=False)
    assert gzip.decompress(out.read_bytes()) == content and leftovers(dl) == [out.name]


def test_content_md5_of_gzip_is_found_whatever_the_name(tmp_path):
    content = b"digits" * 100
    p = tmp_path / "no-suffix"
    p.write_bytes(gzip.compress(content))
    assert checksum_ok(p, md5(content)) and not checksum_ok(p, md5(b"other"))


def test_drip_feeding_mirror_is_dropped(server, tmp_path):
    base, www = server
    (www / "whole").mkdir()
    (www / "whole" / "drip.bin").write_bytes(b"x" * 1000)  # the fallback mirror serves it at once
    slow = Limits(min_rate=1000, rate_window_s=0.3)
    with pytest.raises(DigitlabError, match=r"drip\.bin: too slow: \d+ bytes/s over 0 s \(minimum 1,000\)"):
        download_file("drip.bin", tmp_path / "dl", [base], None, progress=False, limits=slow)
    assert leftovers(tmp_path / "dl") == []
    out = download_file("drip.bin", tmp_path / "dl", [base, base + "whole/"], None, progress=False, limits=slow)
    assert out.read_bytes() == b"x" * 1000


def test_overall_deadline(server, tmp_path):
    base, _ = server
    with pytest.raises(DigitlabError, match=r"drip\.bin: took longer than 0\.3 s \(\d+ bytes so far\)"):
        download_file("drip.bin", tmp_path, [base], None, progress=False, limits=Limits(deadline_s=0.3, min_rate=0))


def test_body_larger_than_the_file_can_be(server, tmp_path):
    base, www = server
    (www / "big.bin").write_bytes(bytes(5000))
    with pytest.raises(DigitlabError, match="announces 5,000 bytes, more than the file can be"):
        download_file("big.bin", tmp_path / "dl", [base], None, progress=False, limits=Limits(max_bytes=4000))
    with pytest.raises(DigitlabError, match="sent more than 1,000,000 bytes"):  # no Content-Length: counted
        download_file("endless.bin", tmp_path / "dl", [base], None, progress=False, limits=Limits(max_bytes=10**6))
    assert leftovers(tmp_path / "dl") == []


def test_official_files_are_capped_from_their_known_size():
    assert max_bytes_for("mnist", "t10k-labels-idx1-ubyte.gz") == 2 * 4_542
    assert max_bytes_for("cifar10", "cifar-10-python.tar.gz") == 2 * 170_498_071
    assert max_bytes_for("usps", "zip.train.gz") == MAX_BYTES


def test_killed_download_leaves_a_part_the_next_start_removes(server, tmp_path):
    base, www = server
    dl = tmp_path / "dl"
    script = (
        "import sys; from digitlab.data.download import download_file;"
        "download_file('hang.bin', sys.argv[1], [sys.argv[2]], None, progress=False)"
    )
    proc = subprocess.Popen([sys.executable, "-c", script, str(dl), base])
    try:
        deadline = time.monotonic() + 60
        while not [p for p in leftovers(dl) if p.endswith("hang.bin")] or (dl / leftovers(dl)[0]).stat().st_size < 100:
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.05)
    finally:
        proc.kill()
        proc.wait()
    (stale,) = leftovers(dl)
    assert stale.startswith(".part-") and stale.endswith("-hang.bin")
    (www / "ok").mkdir()
    (www / "ok" / "hang.bin").write_bytes(b"fine")
    out = download_file("hang.bin", dl, [base + "ok/hang.bin"], md5(b"fine"), progress=False)
    assert out.read_bytes() == b"fine" and leftovers(dl) == ["hang.bin"]


def test_a_live_download_keeps_its_part(tmp_path):
    if fcntl is None:
        pytest.skip("no fcntl: Windows refuses to delete a file in use instead")
    dest = tmp_path / "f.bin"
    live, dead = tmp_path / ".part-live-f.bin", tmp_path / ".part-dead-f.bin"
    live.write_bytes(b"1")
    dead.write_bytes(b"2")
    (tmp_path / ".f.bin.abc.part").write_bytes(b"3")  # an older digitlab's temporary name
    with open(live, "rb") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        removed = remove_stale_parts(dest)
    assert sorted(p.name for p in removed) == [".f.bin.abc.part", ".part-dead-f.bin"]
    assert leftovers(tmp_path) == [".part-live-f.bin"]
