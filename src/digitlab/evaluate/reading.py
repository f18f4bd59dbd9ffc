"""Measuring a digit model the way ``digitlab predict`` reads: each image as a user's picture.

A dataset image (uint8, white ink on black, any size) is rendered as a picture a user could
hand to ``predict`` (``present``), then read by ``Predictor.predict_many``: the one
preprocessing path of the CLI and the web page, with the model calls batched. A reading that
is not exactly one digit ("no digit", or the ink split into several) is an error, shown in
the confusion matrix as the extra column ``?``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

PRESENTATIONS = ("raw", "paper")
PAPER_SCALE = 2  # "paper": the digit enlarged this much, ...
PAPER_MARGIN = 0.25  # ... with this fraction of its side as white margin on every edge, ...
PAPER_INK = 0.1  # ... in ink this dark on white paper (a pencil or pen on a scan)
NOT_ONE_DIGIT = "?"  # the extra class of a reading that is not exactly one digit


def present(image: np.ndarray, presentation: str = "raw") -> Image.Image:
    """A dataset image (uint8 (H, W), white ink on black) as a user's picture.

    ``raw``: the image as it is stored (e.g. white-on-black 16x16, framed tight).
    ``paper``: dark ink on white paper, enlarged PAPER_SCALE times, with a margin: a scan or photo.
    """
    if presentation == "raw":
        return Image.fromarray(np.ascontiguousarray(image), mode="L")
    if presentation != "paper":
        raise ValueError(f"unknown presentation {presentation!r}; choose one of {', '.join(PRESENTATIONS)}")
    h, w = image.shape
    big = Image.fromarray(np.ascontiguousarray(image), mode="L").resize(
        (w * PAPER_SCALE, h * PAPER_SCALE), Image.Resampling.BILINEAR
    )
    ink = np.asarray(big, dtype=np.float32) / 255.0
    m = max(1, round(PAPER_MARGIN * max(h, w) * PAPER_SCALE))
    ink = np.pad(ink, m)
    paper = 1.0 - (1.0 - PAPER_INK) * ink
    return Image.fromarray(np.round(paper * 255).astype(np.uint8), mode="L")


@dataclass
class Reading:
    """What the predictor read for each image of a set."""

    probs: torch.Tensor  # (N, K + 1): class probabilities of one-digit readings, 1 on NOT_ONE_DIGIT otherwise
    n_empty: int  # readings with no digit
    n_split: int  # readings of several digits
    inputs: torch.Tensor  # uint8 (N, 1, S, S): what the model saw (the first digit; black when none)
    n_error: int = 0  # files predict could not read


def _read(predictor, n: int, chunks: Iterable[list]) -> Reading:
    """Read ``n`` sources, given in chunks, with ``predictor.predict_many`` (one batched model call per chunk)."""
    k = len(predictor.classes)
    probs = torch.zeros(n, k + 1)
    side = predictor.image_size
    inputs = torch.zeros(n, 1, side, side, dtype=torch.uint8)
    n_empty = n_split = n_error = 0
    i = 0
    for chunk in chunks:
        for pred in predictor.predict_many(chunk, top_k=1):
            if pred.status != "error" and len(pred.items) == 1:
                probs[i, :k] = torch.tensor(pred.items[0].probs)
            else:
                probs[i, k] = 1.0  # an unreadable file counts as misread too: predict could not read it
                n_error += pred.status == "error"
                n_empty += pred.status != "error" and not pred.items
                n_split += len(pred.items) > 1
            if pred.items and pred.items[0].input_image is not None:
                inputs[i, 0] = torch.from_numpy(np.asarray(pred.items[0].input_image))
            i += 1
    return Reading(probs, n_empty, n_split, inputs, n_error)


def read_images(predictor, images: torch.Tensor, presentation: str = "raw", batch: int = 512) -> Reading:
    """Read uint8 images (N, 1, H, W), each shown as ``present`` makes it, as ``predict`` would (numbers allowed)."""
    arrays = images[:, 0].numpy()
    chunks = ([present(a, presentation) for a in arrays[s : s + batch]] for s in range(0, len(arrays), batch))
    return _read(predictor, len(arrays), chunks)


def read_files(predictor, paths: list[str], batch: int = 512) -> Reading:
    """Read image files as ``digitlab predict`` does (numbers allowed)."""
    return _read(predictor, len(paths), (paths[s : s + batch] for s in range(0, len(paths), batch)))


def digit_folder(root: str | Path, classes: list[str]) -> tuple[list[str], torch.Tensor]:
    """Every image under ``root/<class>/`` (or ``root/test/<class>/`` when the folder is split) whose
    class is one of ``classes``: (paths, labels)."""
    from digitlab.data.folder import IMAGE_EXTENSIONS
    from digitlab.errors import DigitlabError

    root = Path(root).expanduser()
    if (root / "train").is_dir() and (root / "test").is_dir():
        root = root / "test"
    if not root.is_dir():
        raise DigitlabError(f"{root}: not a folder")
    paths, labels = [], []
    for d in sorted(p for p in root.iterdir() if p.is_dir() and p.name in classes):
        found = sorted(
            str(f) for f in d.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS and f.name[0] != "."
        )
        paths += found
        labels += [classes.index(d.name)] * len(found)
    if not paths:
        raise DigitlabError(f"{root} has no images in class folders named {', '.join(classes)}")
    return paths, torch.tensor(labels, dtype=torch.int64)


def reading_meta(reading: Reading, presentation: str | None) -> dict:
    """What eval.json says about a reading beyond the metrics: how it was presented, what was not one digit."""
    return {
        "read_as": "digitlab predict",
        "presentation": presentation or "files",
        "no_digit": reading.n_empty,
        "several_digits": reading.n_split,
        "unreadable": reading.n_error,
    }


@dataclass
class ReadSource:
    """What `digitlab eval` reads the predict way: a dataset split's images, or an image folder's files."""

    name: str
    labels: torch.Tensor  # (N,)
    images: torch.Tensor | None = None  # uint8 (N, 1, H, W), white ink on black, for ``present``
    paths: list[str] | None = None  # image files, read as they are


def reading_source(ckpt: dict, dataset: str | None, data_dir, presentation: str | None, split: str):
    """The images `digitlab eval` should read as `digitlab predict` does, or None for the plain tensor path.

    The predict path is taken for ``--presentation``, for an image folder of digits, and for a
    registered dataset whose images are not the checkpoint's shape (USPS's 16x16, optdigits' 32x32
    for an MNIST model): what a user's image of that kind would go through.
    """
    from digitlab.data import canonical_name, load_dataset
    from digitlab.errors import DigitlabError

    if presentation is not None and presentation not in PRESENTATIONS:
        raise DigitlabError(f"--presentation must be one of {', '.join(PRESENTATIONS)}, not {presentation!r}")
    if split not in ("train", "test"):
        raise DigitlabError(f"--split must be train or test, not {split!r}")
    if dataset is None and presentation is None:
        return None
    name = dataset or ckpt.get("dataset", "mnist")
    classes = list(ckpt["classes"])
    if canonical_name(name) is None and Path(name).expanduser().is_dir():  # an image folder of digits
        if presentation is not None:
            raise DigitlabError("--presentation is for dataset images; an image folder's files are read as they are")
        paths, labels = digit_folder(name, classes)
        return ReadSource(str(name), labels, paths=paths)
    data = load_dataset(name, data_dir, download=True)
    same_shape = (data.channels, data.image_size) == (ckpt["channels"], ckpt["image_size"])
    if presentation is None and same_shape:
        return None
    if data.channels != 1 or data.classes != classes:
        raise DigitlabError(
            f"reading {data.name} as digitlab predict does needs gray images of the checkpoint's classes "
            f"({', '.join(classes)}); {data.name} has {data.channels} channel(s) and classes {', '.join(data.classes)}"
        )
    x, y = (data.train_x, data.train_y) if split == "train" else (data.test_x, data.test_y)
    if not x.shape[0]:
        raise DigitlabError(f"{data.name} has no {split} split here ({data.source}); try --split train")
    return ReadSource(data.name, y, images=x)


def evaluate_as_read(predictor, source: ReadSource, presentation: str | None, out_dir, meta: dict) -> dict:
    """Read ``source`` with ``predictor`` and write the usual report (confusion with a ``?`` column for
    readings that are not one digit, the worst errors as the model saw them) into ``out_dir``."""
    from sklearn.metrics import classification_report

    from digitlab.evaluate.report import format_report, write_report

    if source.paths is not None:
        reading = read_files(predictor, source.paths)
    else:
        assert source.images is not None
        reading = read_images(predictor, source.images, presentation or "raw")
    meta = {**meta, "dataset": source.name, **reading_meta(reading, None if source.paths else presentation or "raw")}
    probs, classes = reading.probs, [*predictor.classes, NOT_ONE_DIGIT]
    if not probs[:, -1].any():  # every image read as one digit: no ? column to average over
        return write_report(out_dir, source.labels, probs[:, :-1], classes[:-1], reading.inputs, meta=meta)
    metrics = write_report(out_dir, source.labels, probs, classes, reading.inputs, meta=meta)
    # Macro averages over the digit classes: ? is no class of the data (its precision and recall are 0 by
    # definition), and each digit's recall already counts its readings as ? against it.
    digits = [c for c in predictor.classes if metrics["per_class"][c]["support"] > 0]
    for key, name in (("macro_precision", "precision"), ("macro_recall", "recall"), ("macro_f1", "f1-score")):
        metrics[key] = float(np.mean([metrics["per_class"][c][name] for c in digits]))
    labels = list(range(len(predictor.classes)))
    metrics["report_text"] = classification_report(
        source.labels.numpy(), probs.argmax(1).numpy(), labels=labels, target_names=predictor.classes, digits=4,
        zero_division=0,
    )  # fmt: skip
    out = Path(out_dir)
    (out / "report.txt").write_text(format_report(metrics) + "\n", encoding="utf-8")
    (out / "eval.json").write_text(json.dumps(metrics, indent=2, ensure_ascii=False, default=str) + "\n")
    return metrics


def reading_dir(checkpoint: Path, source: str, presentation: str | None) -> Path:
    """Where `digitlab eval` writes a reading unless told: ``eval-<checkpoint>-<set>-<presentation>/`` beside a
    run's checkpoint, in the current folder for any other (the shipped model's folder is the package's)."""
    slug = "".join(c if c.isalnum() or c in "-_" else "-" for c in Path(source).name).strip("-") or "folder"
    name = f"eval-{checkpoint.stem}-{slug}-{presentation}" if presentation else f"eval-{checkpoint.stem}-{slug}"
    return checkpoint.parent / name if (checkpoint.parent / "config.json").exists() else Path.cwd() / name
