"""The ONNX path (onnxruntime) against PyTorch's Predictor: single-image latency and batch throughput.

    python benchmarks/onnx_latency.py                     # the shipped model, 1 thread
    python benchmarks/onnx_latency.py --threads 2 --json out.json

Both run the same checkpoint: PyTorch as ``Predictor.load(ckpt)`` (BatchNorm folded, channels_last),
ONNX as ``Predictor.load(model.onnx)`` after ``export_onnx``. Measured, interleaved in blocks so a
noisy neighbour hits both alike:

- ``model 1``: one preprocessed digit through the model and its softmax, the part ONNX replaces;
- ``predict``: ``predictor.predict(image)`` of a drawn digit, preprocessing included (what a user waits for);
- ``batch N``: images per second of the model on N digits at once.

Prints the median over the blocks and the spread (min-max of the block medians).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from digitlab.engine.checkpoint import load_checkpoint
from digitlab.inference.onnx_export import export_onnx
from digitlab.inference.predictor import Predictor, default_model_path
from digitlab.inference.preprocess import preprocess_digits
from digitlab.provenance import cpu_model


def drawn_seven() -> Image.Image:
    img = Image.new("L", (280, 280), 255)
    ImageDraw.Draw(img).line([(80, 60), (200, 60), (120, 240)], fill=0, width=20)
    return img


def per_call_ms(fn, calls: int) -> float:
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - t0) * 1000 / calls


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", default=None, help="a checkpoint (default: the shipped model)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--blocks", type=int, default=7, help="timed blocks per path (after one warm-up block)")
    ap.add_argument("--calls", type=int, default=200, help="single-image calls per block")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    path = args.checkpoint or default_model_path()
    ckpt = load_checkpoint(path)
    with tempfile.TemporaryDirectory() as tmp:
        onnx_file = Path(tmp) / "model.onnx"
        export = export_onnx(ckpt, onnx_file)
        paths = {"pytorch": Predictor.load(path), "onnx": Predictor.load(onnx_file)}
        image = drawn_seven()
        inputs = {}
        for name, p in paths.items():  # normalised for PyTorch, pixels / 255 for ONNX (its mean 0, std 1)
            inputs[name] = preprocess_digits(image, mean=p.mean, std=p.std, multi=False, image_size=p.image_size).array
        batch = {k: np.repeat(v, args.batch, axis=0) for k, v in inputs.items()}

        def model_call(name: str, x: np.ndarray):
            """The model call as predict makes it (numpy in, softmax probabilities out)."""
            predictor = paths[name]
            return lambda: predictor._probabilities(x)

        cases = {
            "model 1": (lambda n: model_call(n, inputs[n]), args.calls),
            "predict": (lambda n: lambda: paths[n].predict(image), args.calls // 4),
            f"batch {args.batch}": (lambda n: model_call(n, batch[n]), max(3, args.calls // 50)),
        }
        results: dict[str, dict[str, list[float]]] = {case: {"pytorch": [], "onnx": []} for case in cases}
        for block in range(args.blocks + 1):
            for case, (make, calls) in cases.items():
                for name in ("pytorch", "onnx") if block % 2 else ("onnx", "pytorch"):
                    ms = per_call_ms(make(name), calls)
                    if block:  # block 0 warms up both
                        results[case][name].append(ms)

    print(
        f"{ckpt['model_name']}, {args.threads} thread(s), {args.blocks} blocks; "
        f"export check max abs logit difference {export.max_abs_diff:.2e}"
    )
    summary = {}
    for case, by_path in results.items():
        row = {}
        for name, times in by_path.items():
            med = statistics.median(times)
            row[name] = {"median_ms": med, "min_ms": min(times), "max_ms": max(times)}
            if case.startswith("batch"):
                row[name]["images_per_s"] = args.batch / med * 1000
        ratio = row["pytorch"]["median_ms"] / row["onnx"]["median_ms"]
        summary[case] = row | {"pytorch_over_onnx": ratio}
        shown = "  ".join(
            f"{n} {r['median_ms']:.3f} ms ({r['min_ms']:.3f}-{r['max_ms']:.3f})"
            + (f" = {r['images_per_s']:,.0f} img/s" if "images_per_s" in r else "")
            for n, r in row.items()
        )
        print(f"{case:>10}: {shown}  pytorch/onnx {ratio:.2f}x")
    if args.json:
        meta = {
            "model": ckpt["model_name"],
            "threads": args.threads,
            "blocks": args.blocks,
            "machine": cpu_model(),
            "cores": os.cpu_count(),
            "torch": torch.__version__,
            "onnxruntime": __import__("onnxruntime").__version__,
        }
        args.json.write_text(json.dumps({"meta": meta, "results": summary}, indent=2))


if __name__ == "__main__":
    main()
