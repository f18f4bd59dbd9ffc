"""The hostile data files and mirrors of issue 14 (items 5-8), each read in a fresh process.

For each case: what digitlab answered (a DigitlabError's first words, or what it accepted), the
peak resident memory of the process that read it above one that only imported digitlab, and the
time of the read (each case's files are written by another process first).

    python benchmarks/hostile_data.py            # all cases, a table
    python benchmarks/hostile_data.py --json     # one JSON object per case
"""

from __future__ import annotations

import argparse
import http.server
import io
import json
import pickle
import resource
import struct
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import zlib
from pathlib import Path


def gz_of_zeros(header: bytes, n: int) -> bytes:
    comp = zlib.compressobj(9, zlib.DEFLATED, 31)
    parts = [comp.compress(header)] + [comp.compress(bytes(1 << 20)) for _ in range(n >> 20)]
    return b"".join(parts) + comp.flush()


def case_idx_gz_bomb(d: Path) -> None:
    """1 MB of .gz inflating to 1 GB, the header declaring all of it."""
    n = 1 << 30
    p = d / "train-images-idx3-ubyte.gz"
    if MAKING:
        p.write_bytes(gz_of_zeros(bytes([0, 0, 8, 3]) + struct.pack(">3I", n // 784, 28, 28), n))
        return
    from digitlab.data.mnist import read_idx

    read_idx(p)


def case_idx_gz_bomb_small_header(d: Path) -> None:
    """1 MB of .gz inflating to 1 GB, the header declaring 60,000 labels."""
    p = d / "train-labels-idx1-ubyte.gz"
    if MAKING:
        p.write_bytes(gz_of_zeros(bytes([0, 0, 8, 1]) + struct.pack(">I", 60000), 1 << 30))
        return
    from digitlab.data.mnist import read_idx

    read_idx(p)


def _idx_set(d: Path, labels: bytes) -> None:
    import gzip

    import numpy as np

    imgs = np.zeros((5, 28, 28), np.uint8)
    for stem in ("train-images-idx3-ubyte", "t10k-images-idx3-ubyte"):
        (d / (stem + ".gz")).write_bytes(
            gzip.compress(bytes([0, 0, 8, 3]) + struct.pack(">3I", 5, 28, 28) + imgs.tobytes())
        )
    for stem in ("train-labels-idx1-ubyte", "t10k-labels-idx1-ubyte"):
        (d / (stem + ".gz")).write_bytes(gzip.compress(labels))


def case_idx_nan_labels(d: Path) -> None:
    import numpy as np

    if MAKING:
        return _idx_set(
            d, bytes([0, 0, 0x0D, 1]) + struct.pack(">I", 5) + np.array([1, np.nan, 2, 3, 4], ">f4").tobytes()
        )
    from digitlab.data import load_dataset

    load_dataset("mnist", d, download=False)


def case_idx_many_dims(d: Path) -> None:
    p = d / "x-idx"
    if MAKING:
        p.write_bytes(bytes([0, 0, 8, 200]) + b"\x00\x00\x00\x02" * 200)
        return
    from digitlab.data.mnist import read_idx

    read_idx(p)


def _cifar(payload: bytes) -> None:
    if MAKING:
        return
    from digitlab.data.cifar10 import _batch

    _batch(payload, "data_batch_1")


def case_cifar_bytearray(d: Path) -> None:
    """34 bytes asking for bytearray(1 GB)."""
    _cifar(b"c__builtin__\nbytearray\n(J\x00\x00\x00@tR.")


def case_cifar_shared_list(d: Path) -> None:
    """Labels nested 9 deep through shared references: 10**9 values if flattened."""
    import numpy as np

    nested: list = [0] * 10
    for _ in range(8):
        nested = [nested] * 10
    _cifar(pickle.dumps({b"data": np.zeros((4, 3072), np.uint8), b"labels": nested}, protocol=2))


class _Uninit:
    def __reduce__(self):
        import numpy as np

        return (np.ndarray, ((100000, 3072), np.dtype(np.uint8)))


def case_cifar_uninitialised(d: Path) -> None:
    _cifar(pickle.dumps({b"data": _Uninit(), b"labels": [0] * 100000}, protocol=2))


def case_cifar_tar_member(d: Path) -> None:
    """A tarball whose data_batch_1 declares 1.26 GB of zeros (a few MB compressed)."""
    size = 1_260_000_000
    tgz = d / "cifar-10-python.tar.gz"

    class Zeros(io.RawIOBase):
        left = size

        def readable(self):
            return True

        def readinto(self, b):
            n = min(len(b), self.left)
            b[:n] = bytes(n)
            self.left -= n
            return n

    if MAKING:
        with tarfile.open(tgz, "w:gz", compresslevel=1) as tar:
            info = tarfile.TarInfo("cifar-10-batches-py/data_batch_1")
            info.size = size
            tar.addfile(info, io.BufferedReader(Zeros()))
        return
    from digitlab.data import load_dataset

    load_dataset("cifar10", d, download=False)


def case_folder_pixel_bombs(d: Path) -> None:
    """Six 1-bit PNGs of 144 megapixels among six ordinary images."""
    if MAKING:
        from PIL import Image

        buf = io.BytesIO()
        Image.new("1", (12000, 12000)).save(buf, format="PNG")
        small = io.BytesIO()
        Image.new("L", (28, 28), 0).save(small, format="PNG")
        for c in ("a", "b"):
            (d / c).mkdir()
            for i in range(3):
                (d / c / f"{i}.png").write_bytes(small.getvalue())
                (d / c / f"bomb{i}.png").write_bytes(buf.getvalue())
        return
    import warnings

    from digitlab.data.folder import load_folder

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data = load_folder(d, progress=False, workers=1, cache=False)
    raise Accepted(
        f"{len(data.train_x) + len(data.test_x)} images, skipped {len(data.skipped)}: {data.skipped[0][-60:]}"
    )


def case_download_oversized(d: Path) -> None:
    """A mirror sending an endless body without a length for MNIST's 9.9 MB training images."""
    if MAKING:
        return

    class Endless(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            chunk = b"%x\r\n%s\r\n" % (1 << 16, bytes(1 << 16))
            try:
                for _ in range(300 * 16):  # 300 MB
                    self.wfile.write(chunk)
            except OSError:
                pass

        def log_message(self, *a):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Endless)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    from digitlab.data.download import download_dataset

    download_dataset("mnist", d, mirrors=[f"http://127.0.0.1:{httpd.server_address[1]}/"], progress=False)


class Accepted(Exception):
    """What a case accepted, to report."""


MAKING = False  # set in the process that writes a case's files; the measured process only reads
CASES = {name[5:]: fn for name, fn in globals().items() if name.startswith("case_")}


def _child(name: str, folder: str, make: bool) -> None:
    global MAKING
    import digitlab.data  # noqa: F401  (the baseline imports it too)
    from digitlab.errors import DigitlabError

    MAKING = make
    t0 = time.perf_counter()
    try:
        CASES[name](Path(folder))
        outcome = "accepted"
    except Accepted as exc:
        outcome = f"accepted {exc}"
    except DigitlabError as exc:
        outcome = "DigitlabError: " + " | ".join(str(exc).splitlines()[:2]).replace(folder, "<tmp>")[:200]
    except BaseException as exc:
        outcome = f"RAW {type(exc).__name__}: {str(exc)[:150]}"
    seconds = time.perf_counter() - t0
    print(json.dumps({"outcome": outcome, "seconds": round(seconds, 3), "maxrss_kb": _maxrss()}))


def _maxrss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--child")
    ap.add_argument("--folder")
    ap.add_argument("--make", action="store_true")
    args = ap.parse_args()
    if args.child == "baseline":
        import digitlab.data  # noqa: F401

        print(json.dumps({"maxrss_kb": _maxrss()}))
        return
    if args.child:
        _child(args.child, args.folder, args.make)
        return

    def run(name: str, folder: str = "", make: bool = False) -> dict:
        cmd = [sys.executable, __file__, "--child", name, "--folder", folder] + (["--make"] if make else [])
        return json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)

    base = run("baseline")["maxrss_kb"]
    for name in CASES:
        with tempfile.TemporaryDirectory() as d:
            run(name, d, make=True)
            r = run(name, d)
        r = {"case": name, **r, "peak_mb_above_baseline": round((r.pop("maxrss_kb") - base) / 1024, 1)}
        if args.json:
            print(json.dumps(r), flush=True)
        else:
            print(f"{name:26} {r['peak_mb_above_baseline']:7.1f} MB {r['seconds']:6.2f} s  {r['outcome']}", flush=True)


if __name__ == "__main__":
    main()
