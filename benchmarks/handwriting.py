"""How well does a model read realistic handwriting? digitlab's preprocessing vs the seeds' naive one.

Generates the three kinds of ``digitlab.data.synth`` (phone photos, canvas drawings, written
numbers) from MNIST *test* digits, reads them with ``Predictor`` (MNIST-style preprocessing,
segmentation) and with the naive pipeline the seeds used (grayscale, resize to 28x28,
normalise), and prints and writes the accuracy table.

    python benchmarks/handwriting.py --data-dir ../shared/data/mnist --seeds 0 1
    python benchmarks/handwriting.py --model runs/x/best.pt --count 300 --numbers 100
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from digitlab.data import synth
from digitlab.data.locate import find_idx_files
from digitlab.data.mnist import read_idx
from digitlab.inference.predictor import Predictor


def naive_read(predictor: Predictor, path: Path) -> str:
    """The seeds' pipeline: open, grayscale, resize to 28x28, normalise, one class per image."""
    img = Image.open(path).convert("L").resize((28, 28), Image.Resampling.BILINEAR)
    x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0)
    x = ((x - predictor.mean[0]) / predictor.std[0]).view(1, 1, 28, 28)
    return predictor.classes[int(predictor._probabilities(x).argmax(1))]


def provenance() -> dict:
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent
        ).stdout.strip()
    except OSError:
        commit = ""
    return {
        "commit": commit or None,
        "machine": f"{platform.machine()} {platform.processor() or ''} {os.cpu_count()} CPUs".strip(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="checkpoint (default: the shipped model)")
    ap.add_argument("--data-dir", default=None, help="folder with the MNIST test IDX files")
    ap.add_argument("--count", type=int, default=1000, help="images per single-digit kind")
    ap.add_argument("--numbers", type=int, default=300, help="multi-digit number images")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0], help="one test set per seed (each a fresh draw)")
    ap.add_argument("--out", default="bench-results/handwriting", help="where the table and images go")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    files = find_idx_files("mnist", args.data_dir)
    if files is None:
        raise SystemExit("MNIST test files not found: pass --data-dir or set DIGITLAB_DATA")
    x = read_idx(files["test_images"])
    y = read_idx(files["test_labels"])
    predictor = Predictor.load(args.model)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    images_dir = Path(tempfile.mkdtemp(prefix="handwriting-", dir=out))

    rows = []
    for seed in args.seeds:
        for kind, count in (("photo", args.count), ("canvas", args.count), ("number", args.numbers)):
            t0 = time.perf_counter()
            manifest = synth.generate(images_dir / f"seed{seed}", x, y, kind=kind, count=count, seed=seed)
            gen_s = time.perf_counter() - t0
            items = synth.read_manifest(manifest)
            t0 = time.perf_counter()
            preds = predictor.predict_many([str(f) for f, _ in items])
            ms = (time.perf_counter() - t0) * 1000 / len(items)
            right = [p.text == label for p, (_, label) in zip(preds, items)]
            naive = float(np.mean([naive_read(predictor, f) == label for f, label in items]))
            failed = sum(p.status == "error" for p in preds)
            rows.append(
                {
                    "seed": seed,
                    "kind": kind,
                    "images": len(items),
                    "digitlab": float(np.mean(right)),
                    "naive": naive,
                    "ms_per_image": ms,
                    "errors": failed,
                    "generate_s": gen_s,
                    "misread": [str(f.name) for (f, _), ok in zip(items, right) if not ok],
                }
            )
            print(
                f"seed {seed} {kind:7s} n={len(items):5d}  digitlab {np.mean(right):7.2%}  naive {naive:7.2%}"
                f"  {ms:6.1f} ms/image",
                flush=True,
            )

    result = {
        "model": predictor.info,
        "args": vars(args),
        "rows": rows,
        **provenance(),
    }
    (out / "handwriting.json").write_text(json.dumps(result, indent=2))
    table = [
        "| seed | kind | images | digitlab preprocessing | naive (gray, resize 28x28, normalise) | ms/image |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        table.append(
            f"| {r['seed']} | {r['kind']} | {r['images']} | {r['digitlab']:.2%} | {r['naive']:.2%} "
            f"| {r['ms_per_image']:.1f} |"
        )
    for kind in ("photo", "canvas", "number"):  # all seeds together
        mine = [r for r in rows if r["kind"] == kind]
        n = sum(r["images"] for r in mine)
        ours = sum(r["digitlab"] * r["images"] for r in mine) / n
        naive = sum(r["naive"] * r["images"] for r in mine) / n
        table.append(f"| all | {kind} | {n} | **{ours:.2%}** | {naive:.2%} | |")
    (out / "handwriting.md").write_text("\n".join(table) + "\n")
    print("\n".join(table))
    print(f"images in {images_dir}; results in {out / 'handwriting.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
