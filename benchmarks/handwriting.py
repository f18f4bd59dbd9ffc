"""How well does a model read handwriting? digitlab's preprocessing vs the seeds' naive one.

Real handwriting from other sources (``--real``, on by default when found): USPS train (16x16)
and optdigits tra and cv (32x32), each as its raw images (white on black, framed tight) and as a
paper scan (dark on white, 2x, with a margin; ``digitlab.evaluate.reading.present``), read the
way ``digitlab predict`` reads, beside the naive pipeline and, with ``--baseline``, another model
(the previous shipped one); with per-class recall and the most confused pairs.

Synthetic handwriting: the four kinds of ``digitlab.data.synth`` (phone photos, canvas drawings,
written numbers, photos of a page with more in view, by setting) generated from MNIST *test* digits, read with ``Predictor`` (MNIST-style
preprocessing, segmentation) and with the naive pipeline the seeds used (grayscale, resize to
28x28, normalise).

    python benchmarks/handwriting.py --data-dir ../shared/data/mnist --seeds 0 1
    python benchmarks/handwriting.py --real-only --baseline local-data/default-old.pt
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
    x = np.asarray(img, dtype=np.float32) / 255.0
    x = ((x - predictor.mean[0]) / predictor.std[0]).reshape(1, 1, 28, 28).astype(np.float32)
    return predictor.classes[int(predictor._probabilities(x).argmax(1)[0])]


def naive_read_array(predictor: Predictor, img: Image.Image) -> np.ndarray:
    """The seeds' pipeline on a PIL image: class probabilities (K,)."""
    small = img.convert("L").resize((28, 28), Image.Resampling.BILINEAR)
    x = np.asarray(small, dtype=np.float32) / 255.0
    x = ((x - predictor.mean[0]) / predictor.std[0]).reshape(1, 1, 28, 28).astype(np.float32)
    return predictor._probabilities(x)[0]


REAL_SETS = (("usps", "train"), ("optdigits", "train"), ("optdigits", "test"))  # optdigits: tra, cv


def confusions(y: np.ndarray, pred: np.ndarray, classes: list[str]) -> dict:
    """Per-class recall and the most confused pairs (pred == len(classes): not one digit, shown as '?')."""
    names = [*classes, "?"]
    recall = {c: float(np.mean(pred[y == i] == i)) for i, c in enumerate(classes) if (y == i).any()}
    pairs: dict[tuple[int, int], int] = {}
    for t, p in zip(y, pred, strict=True):
        if t != p:
            pairs[(int(t), int(p))] = pairs.get((int(t), int(p)), 0) + 1
    top = sorted(pairs.items(), key=lambda kv: (-kv[1], kv[0]))[:8]
    return {"recall": recall, "confused": [f"{names[t]}->{names[p]}: {n}" for (t, p), n in top]}


def real_rows(models: dict[str, Predictor], data_dir: str | None) -> list[dict]:
    """Each real development set, raw and as paper, read by each model and by the naive pipeline."""
    from digitlab.data import load_dataset
    from digitlab.errors import DigitlabError
    from digitlab.evaluate.reading import PRESENTATIONS, present, read_images

    rows = []
    for name, split in REAL_SETS:
        try:
            data = load_dataset(name, data_dir, download=False, progress=False)
        except DigitlabError as exc:
            print(f"skipping {name}: {str(exc).splitlines()[0]}", flush=True)
            continue
        x, y = (data.train_x, data.train_y) if split == "train" else (data.test_x, data.test_y)
        label = {"usps": "usps train", "optdigits": f"optdigits {'tra' if split == 'train' else 'cv'}"}[name]
        for presentation in PRESENTATIONS:
            row: dict = {"set": label, "presentation": presentation, "images": int(x.shape[0])}
            for who, predictor in models.items():
                t0 = time.perf_counter()
                r = read_images(predictor, x, presentation)
                ms = (time.perf_counter() - t0) * 1000 / max(1, x.shape[0])
                pred = r.probs.argmax(1).numpy()
                row[who] = {
                    "accuracy": float(np.mean(pred == y.numpy())),
                    "no_digit": r.n_empty,
                    "several_digits": r.n_split,
                    "ms_per_image": ms,
                    **confusions(y.numpy(), pred, predictor.classes),
                }
            first = next(iter(models.values()))
            naive = np.array([naive_read_array(first, present(a, presentation)).argmax() for a in x[:, 0].numpy()])
            row["naive"] = float(np.mean(naive == y.numpy()))
            print(
                f"{label:14s} {presentation:5s} n={x.shape[0]:5d}  "
                + "  ".join(f"{who} {row[who]['accuracy']:7.2%} (no digit {row[who]['no_digit']})" for who in models)
                + f"  naive {row['naive']:7.2%}",
                flush=True,
            )
            rows.append(row)
    return rows


def real_table(rows: list[dict], models: list[str]) -> list[str]:
    head = "| set | presentation | images | " + " | ".join(models) + " | naive | no digit | most confused |"
    table = [head, "|---|---|---:|" + "---:|" * len(models) + "---:|---:|---|"]
    for r in rows:
        first = r[models[0]]
        table.append(
            f"| {r['set']} | {r['presentation']} | {r['images']} | "
            + " | ".join(f"{r[m]['accuracy']:.2%}" for m in models)
            + f" | {r['naive']:.2%} | {first['no_digit']} | {', '.join(first['confused'][:4])} |"
        )
    return table


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
    ap.add_argument("--sheets", type=int, default=600, help="photos of a page with more in view (synth.SETTINGS)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0], help="one test set per seed (each a fresh draw)")
    ap.add_argument("--out", default="bench-results/handwriting", help="where the table and images go")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--baseline", default=None, help="a second checkpoint read beside --model (the previous one)")
    ap.add_argument("--real-data-dir", default=None, help="folder with usps/ and optdigits/ (default: $DIGITLAB_DATA)")
    ap.add_argument("--real-only", action="store_true", help="only the real sets, no synthetic kinds")
    ap.add_argument("--no-real", action="store_true", help="only the synthetic kinds")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    if args.real_only:
        args.seeds = []
    models = {"digitlab": Predictor.load(args.model)}
    if args.baseline:
        models["baseline"] = Predictor.load(args.baseline)
    real = [] if args.no_real else real_rows(models, args.real_data_dir)
    files = find_idx_files("mnist", args.data_dir)
    if files is None:
        raise SystemExit("MNIST test files not found: pass --data-dir or set DIGITLAB_DATA")
    x = read_idx(files["test_images"])
    y = read_idx(files["test_labels"])
    predictor = models["digitlab"]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    images_dir = Path(tempfile.mkdtemp(prefix="handwriting-", dir=out))

    rows = []
    for seed in args.seeds:
        kinds = (("photo", args.count), ("canvas", args.count), ("number", args.numbers), ("sheet", args.sheets))
        for kind, count in kinds:
            t0 = time.perf_counter()
            manifest = synth.generate(images_dir / f"seed{seed}", x, y, kind=kind, count=count, seed=seed)
            gen_s = time.perf_counter() - t0
            items = synth.read_manifest(manifest)
            t0 = time.perf_counter()
            preds = predictor.predict_many([str(f) for f, _ in items])
            ms = (time.perf_counter() - t0) * 1000 / len(items)
            right = [p.text == label for p, (_, label) in zip(preds, items, strict=True)]
            naive = float(np.mean([naive_read(predictor, f) == label for f, label in items]))
            failed = sum(p.status == "error" for p in preds)
            by_setting = {}  # a sheet's setting ends its file name
            if kind == "sheet":
                for setting in synth.SETTINGS:
                    mine = [ok for (f, _), ok in zip(items, right, strict=True) if f.stem.endswith("_" + setting)]
                    by_setting[setting] = {"images": len(mine), "digitlab": float(np.mean(mine)) if mine else None}
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
                    "misread": [str(f.name) for (f, _), ok in zip(items, right, strict=True) if not ok],
                    "by_setting": by_setting,
                }
            )
            for setting, r in by_setting.items():
                print(f"    {setting:10s} n={r['images']:4d}  digitlab {r['digitlab'] or 0:7.2%}", flush=True)
            print(
                f"seed {seed} {kind:7s} n={len(items):5d}  digitlab {np.mean(right):7.2%}  naive {naive:7.2%}"
                f"  {ms:6.1f} ms/image",
                flush=True,
            )

    result = {
        "model": predictor.info,
        "baseline": models["baseline"].info if "baseline" in models else None,
        "args": vars(args),
        "real": real,
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
    for kind in synth.KINDS:  # all seeds together
        mine = [r for r in rows if r["kind"] == kind]
        if not mine:
            continue
        n = sum(r["images"] for r in mine)
        ours = sum(r["digitlab"] * r["images"] for r in mine) / n
        naive = sum(r["naive"] * r["images"] for r in mine) / n
        table.append(f"| all | {kind} | {n} | **{ours:.2%}** | {naive:.2%} | |")
    if real:
        table = [*real_table(real, list(models)), "", *table]
    (out / "handwriting.md").write_text("\n".join(table) + "\n")
    print("\n".join(table))
    print(f"images in {images_dir}; results in {out / 'handwriting.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
