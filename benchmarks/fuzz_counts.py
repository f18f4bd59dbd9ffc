"""Fuzz campaign counts for BENCHMARKS.md's reliability section, per target.

    python benchmarks/fuzz_counts.py --images 3000 --checkpoints 500 --seed 0

For each target (mutated images in every allowed format; byte-mutated copies of the shipped
``default.pt``, without and with a digest), counts the inputs, the clean ``DigitlabError``s, the
accepted inputs (decoded and answered validly by the shipped model, or a checkpoint that loads and
answers with finite probabilities), any other exception (each is a bug), and the process's peak
resident memory. Seeded with ``random.Random``: the same inputs on every run. Prints JSON.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import random
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from digitlab.engine.checkpoint import load_checkpoint, save_checkpoint
from digitlab.errors import DigitlabError
from digitlab.inference.image import ALLOWED_FORMATS, decode_image
from digitlab.inference.predictor import Predictor, default_model_path


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def seed_image(fmt: str) -> bytes:
    arr = np.zeros((24, 32), np.uint8)
    arr[4:20, 14:18] = 255
    img = Image.fromarray(arr).convert("RGB" if fmt in ("JPEG", "WEBP") else "L")
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def mutate(data: bytes, rng: random.Random) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 6)):
        at = rng.randrange(len(buf)) if buf else 0
        kind = rng.choice(["flip", "insert", "cut", "grow"])
        if kind == "flip" and buf:
            buf[at] = rng.randrange(256)
        elif kind == "insert":
            buf[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
        elif kind == "cut":
            del buf[at : at + rng.randint(1, 64)]
        else:
            buf[at : at + 4] = rng.choice([b"\xff\xff\xff\xff", b"\x7f\xff\xff\xff", b"\x00\x00\x00\x00"])
    return bytes(buf)


def valid(pred) -> bool:
    return pred.status in ("ok", "uncertain", "empty") and all(
        all(math.isfinite(p) for p in it.probs) and abs(sum(it.probs) - 1) < 1e-4 for it in pred.items
    )


def counts() -> dict:
    return {"inputs": 0, "clean_errors": 0, "accepted": 0, "other_exceptions": 0, "invalid_answers": 0}


def images(n: int, rng: random.Random, predictor: Predictor) -> dict:
    c = counts()
    seeds = [seed_image(f) for f in ALLOWED_FORMATS]
    for _ in range(n):
        c["inputs"] += 1
        try:
            pred = predictor.predict(decode_image(mutate(rng.choice(seeds), rng), "fuzz"))
        except DigitlabError:
            c["clean_errors"] += 1
            continue
        except Exception:  # noqa: BLE001 - counted: each one is a bug
            c["other_exceptions"] += 1
            continue
        c["accepted" if valid(pred) or pred.status == "error" else "invalid_answers"] += 1
    return c


def checkpoints(n: int, rng: random.Random, original: bytes, folder: Path, digest: bool) -> dict:
    c = counts()
    probe = Image.new("L", (40, 40))
    probe.paste(255, (18, 6, 23, 34))
    weights = torch.load(io.BytesIO(original), weights_only=True)["state_dict"]
    for i in range(n):
        c["inputs"] += 1
        buf = bytearray(original)
        for _ in range(rng.randint(1, 8)):
            buf[rng.randrange(len(buf))] = rng.randrange(256)
        path = folder / f"m{i}.pt"
        path.write_bytes(bytes(buf))
        try:
            if digest:
                ck = load_checkpoint(path)
                same = all(torch.equal(ck["state_dict"][k], weights[k]) for k in weights)
                c["accepted" if same else "invalid_answers"] += 1
            else:
                pred = Predictor.load(path).predict(probe)
                c["accepted" if valid(pred) else "invalid_answers"] += 1
        except DigitlabError:
            c["clean_errors"] += 1
        except Exception:  # noqa: BLE001
            c["other_exceptions"] += 1
        finally:
            path.unlink()
    return c


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=3000)
    ap.add_argument("--checkpoints", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    rng = random.Random(args.seed)
    predictor = Predictor.load()
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        original = default_model_path().read_bytes()
        with_digest = save_checkpoint(folder / "d.pt", torch.load(default_model_path(), weights_only=True)).read_bytes()
        for name, run in (
            ("images", lambda: images(args.images, rng, predictor)),
            ("default.pt (no digest)", lambda: checkpoints(args.checkpoints, rng, original, folder, False)),
            ("default.pt with digest", lambda: checkpoints(args.checkpoints, rng, with_digest, folder, True)),
        ):
            t0 = time.perf_counter()
            out[name] = run() | {"peak_rss_mb": round(peak_mb()), "seconds": round(time.perf_counter() - t0, 1)}
            print(name, out[name], flush=True)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
