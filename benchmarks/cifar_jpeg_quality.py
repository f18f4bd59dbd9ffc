"""What JPEG compression costs a CIFAR-10 recipe: train on copies compressed harder than the shipped one.

    python benchmarks/cifar_jpeg_quality.py --qualities 50 30 --preset cifar-fast-cpu --json out.json

The lossless CIFAR-10 files are not on these machines, so the cost of the shipped copy's compression
(JPEG quality 75, 4:2:0) cannot be measured directly. This measures its slope instead: each quality Q
re-encodes every image of the copy (decoded as the training reads it) at quality Q, 4:2:0, into an
image folder with ``train/`` and ``test/``, and trains ``--preset`` on it with ``digitlab train``;
``--qualities 75`` re-encodes at the copy's own quality (the control: a second pass at the same
tables changes few pixels). Prints per copy its PSNR against the shipped copy and the final accuracy
(TTA), beside the preset on the shipped copy when ``--baseline`` is given.
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def write_copy(images: np.ndarray, labels: np.ndarray, classes: list[str], split: str, root: Path, q: int) -> float:
    """Re-encode ``images`` (N, 32, 32, 3 uint8) at quality ``q`` under ``root/split/<class>/``; returns the PSNR."""
    se = 0.0
    for i, (img, y) in enumerate(zip(images, labels, strict=True)):
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, "JPEG", quality=q, subsampling=2)
        data = buf.getvalue()
        back = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.float64)
        se += float(((back - img) ** 2).mean())
        d = root / split / classes[int(y)]
        d.mkdir(parents=True, exist_ok=True)
        (d / f"{i:05d}.jpg").write_bytes(data)
    mse = se / len(images)
    return float(10 * np.log10(255**2 / mse)) if mse > 0 else float("inf")


def train(preset: str, data_dir: Path, runs: Path, name: str) -> dict:
    """``digitlab train --preset P`` on ``data_dir``; its eval.json (final accuracy) and wall seconds."""
    cmd = [sys.executable, "-m", "digitlab", "train", "--preset", preset, "--dataset", "cifar10", "-q"]
    cmd += ["--data-dir", str(data_dir), "--runs-dir", str(runs), "--name", name]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    metrics = json.loads((runs / name / "eval.json").read_text())
    kept = {k: metrics.get(k) for k in ("dataset", "tta", "loss", "macro_f1")}
    return {"accuracy": metrics.get("accuracy"), "wall_seconds": time.perf_counter() - t0, **kept}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--qualities", type=int, nargs="+", default=[50, 30])
    ap.add_argument("--preset", default="cifar-fast-cpu")
    ap.add_argument("--data-dir", default="../shared/data")
    ap.add_argument("--baseline", action="store_true", help="also train on the shipped copy")
    ap.add_argument("--work", default=None, help="folder for the copies and runs (default: a temporary one)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    from digitlab.data import load_dataset

    data = load_dataset("cifar10", args.data_dir)
    splits = {
        "train": (data.train_x.permute(0, 2, 3, 1).numpy(), data.train_y.numpy()),
        "test": (data.test_x.permute(0, 2, 3, 1).numpy(), data.test_y.numpy()),
    }
    work = Path(args.work or tempfile.mkdtemp(prefix="cifar-q-"))
    out: dict = {"preset": args.preset, "note": data.note, "copies": {}}
    if args.baseline:
        out["copies"]["shipped"] = train(args.preset, Path(args.data_dir), work / "runs", "shipped")
        print(f"shipped copy: {out['copies']['shipped']['accuracy']:.4f}", flush=True)
    for q in args.qualities:
        root = work / f"q{q}"
        psnr = {s: write_copy(x, y, data.classes, s, root, q) for s, (x, y) in splits.items()}
        result = train(args.preset, root, work / "runs", f"q{q}")
        out["copies"][f"q{q}"] = {"quality": q, "psnr_vs_shipped_db": psnr, **result}
        print(
            f"q{q}: PSNR {psnr['train']:.1f} dB against the shipped copy, accuracy {result['accuracy']:.4f}", flush=True
        )
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
