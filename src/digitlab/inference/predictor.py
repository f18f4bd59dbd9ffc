"""Read digits (or classify images) with a trained checkpoint: what the CLI and the web app call.

``Predictor.load`` rebuilds the model once; ``predict`` runs one image through
``digitlab.inference.preprocess`` and the model; ``predict_many`` does the same for many
files with the model calls batched across files. Problems with one file (unreadable,
too large) become a ``Prediction`` with ``status="error"``, never an exception.
"""

from __future__ import annotations

import base64
import copy
import io
import math
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from digitlab.engine.checkpoint import load_checkpoint, model_from_checkpoint
from digitlab.engine.integrity import check_temperature
from digitlab.errors import DigitlabError
from digitlab.inference.image import load_image
from digitlab.inference.onnx import OnnxModel, is_onnx_path, load_onnx
from digitlab.inference.preprocess import generic_image, normalize, preprocess_digits

UNCERTAIN_BELOW = 0.6  # a top probability under this is flagged as uncertain ...
CALIBRATED_UNCERTAIN_BELOW = 0.95  # ... or under this, for a calibrated checkpoint (`digitlab export`):
# label smoothing caps an uncalibrated model near 0.91, so 0.6 there and 0.95 calibrated flag about
# the same handwriting misreads (BENCHMARKS.md)
SPLIT_COST = 0.3  # log-probability a cut of one segment into two digits must gain to be taken
# (label smoothing 0.1 caps a confident digit near 0.9: two confident halves never beat a confident
# whole by this much, while a misread whole at 0.5 against two halves at 0.9 does)
JOIN_COST = 1.0  # ... and a join of two neighbours into one digit
DEFAULT_MODEL = "default.pt"  # the shipped model, in digitlab/assets/
DIGIT_CLASSES = [str(i) for i in range(10)]


@dataclass
class DigitPrediction:
    """One recognised digit (or, for image models, the one class of the whole image)."""

    label: str  # the class name: "7", or "cat" for an image model
    index: int  # its class index
    probability: float
    probs: list[float]  # every class, in class order
    top_k: list[tuple[str, float]]  # the k most likely (label, probability), best first
    box: tuple[int, int, int, int] | None  # (left, top, right, bottom) in the original image; None for image models
    uncertain: bool  # probability under the predictor's threshold (uncertain_below)
    input_image: np.ndarray | None = None  # uint8 (H, W) or (H, W, 3): exactly what the model saw

    def to_dict(self, include_input: bool = False) -> dict:
        d = {
            "label": self.label,
            "index": self.index,
            "probability": round(self.probability, 6),
            "probs": [round(p, 6) for p in self.probs],
            "top_k": [{"label": lab, "probability": round(p, 6)} for lab, p in self.top_k],
            "box": list(self.box) if self.box is not None else None,
            "uncertain": self.uncertain,
        }
        if include_input:
            d["input_image"] = png_data_url(self.input_image) if self.input_image is not None else None
        return d


@dataclass
class Prediction:
    """The answer for one image."""

    source: str  # the file name, or "<image>" / "<bytes>"
    status: str  # "ok" | "uncertain" | "empty" (no digit found) | "error"
    text: str | None  # "2024", "7", a class name; None when empty or on error
    items: list[DigitPrediction] = field(default_factory=list)  # one per digit, left to right
    error: str | None = None
    elapsed_ms: float = 0.0

    def to_dict(self, include_input: bool = False) -> dict:
        """JSON-ready; the model's input images as PNG data URLs when ``include_input``."""
        return {
            "source": self.source,
            "status": self.status,
            "text": self.text,
            "items": [it.to_dict(include_input) for it in self.items],
            "error": self.error,
            "elapsed_ms": round(self.elapsed_ms, 3),
        }


def png_data_url(image: np.ndarray) -> str:
    """A uint8 array as a ``data:image/png;base64,...`` URL (for JSON and the web page)."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def default_model_path(must_exist: bool = True) -> Path:
    """The shipped default model; a clear error if the package was installed without it."""
    ref = resources.files("digitlab") / "assets" / DEFAULT_MODEL
    if must_exist and not ref.is_file():
        raise DigitlabError(
            f"the default model ({DEFAULT_MODEL}) is missing from this installation; "
            "pass a checkpoint with --model, or train one with `digitlab train`"
        )
    return Path(str(ref))  # the package is installed as files (setuptools, editable or not)


INFERENCE_KEYS = (
    "model_name",
    "model_args",
    "state_dict",
    "dataset",
    "task",
    "classes",
    "channels",
    "image_size",
    "mean",
    "std",
    "config",
    "epoch",
    "metrics",
    "temperature",
)


def slim_checkpoint(ckpt: dict, half: bool = True) -> dict:
    """What inference needs from a checkpoint (no optimizer, scheduler, RNG or history).

    ``half`` stores floating-point weights as float16, halving the file; loading copies them
    back into the float32 model (the change in accuracy is far below run-to-run noise).
    """
    slim = {k: ckpt[k] for k in INFERENCE_KEYS if k in ckpt}
    if half:
        slim["state_dict"] = {k: v.half() if v.is_floating_point() else v for k, v in ckpt["state_dict"].items()}
    return slim


def _source_name(image) -> str:
    if isinstance(image, (str, Path)):
        return str(image)
    if isinstance(image, (bytes, bytearray)):
        return "<bytes>"
    return "<image>"


@dataclass
class _Prepared:
    """One image after preprocessing, before the model: the model input and where it came from."""

    source: str
    x: torch.Tensor  # (N, C, H, W): the digits, then the halves of wide ones; N = 0 for a blank image
    images: list[np.ndarray]  # one per row of x
    boxes: list[tuple[int, int, int, int] | None]
    ms: float
    n_main: int = 0  # rows of x that are the digits as segmented
    halves: dict[int, list[int]] = field(default_factory=dict)  # digit index -> rows of each cut's first half
    joins: dict[int, int] = field(default_factory=dict)  # digit index -> row of it joined with the next
    digits: list = field(default_factory=list)  # the preprocessed Digits (their offers not yet expanded)

    def add_offers(self, main_probs: torch.Tensor, everything: bool = False) -> torch.Tensor | None:
        """Preprocess the cuts and joins that could still beat the digits as read; their inputs, or None.

        A reading scores its log-probabilities less SPLIT_COST per cut and JOIN_COST per join, and no
        log-probability exceeds 0. So a cut of digit i can only win when log p(i) < -SPLIT_COST, and a
        join of i and i+1 only when log p(i) + log p(i+1) < -JOIN_COST (each digit's best reading
        scores at least its whole log-probability). Confident digits skip the work: the same answer.
        ``everything``: all offers, as if none could be ruled out (to check that claim).
        """
        t0 = time.perf_counter()
        logp = [math.log(max(float(p.max()), 1e-12)) for p in main_probs]
        rows = []
        for i, d in enumerate(self.digits):
            cuts = d.offers_cut and (everything or logp[i] < -SPLIT_COST)
            join = d.offers_join and i + 1 < len(self.digits) and (everything or logp[i] + logp[i + 1] < -JOIN_COST)
            if not (cuts or join):
                continue
            d.expand(cuts=cuts, join=join)
            for pieces in d.alternatives if cuts else []:
                self.halves.setdefault(i, []).append(self.n_main + len(rows))
                rows += pieces
            if join and d.merged_with_next is not None:
                self.joins[i] = self.n_main + len(rows)
                rows.append(d.merged_with_next)
        self.ms += (time.perf_counter() - t0) * 1000
        if not rows:
            return None
        self.images += [r.image for r in rows]
        self.boxes += [r.box for r in rows]
        return torch.stack([r.tensor for r in rows])


def _best_reading(
    read: list[DigitPrediction], prep: _Prepared, logp_rows: list[float] | None = None
) -> list[DigitPrediction]:
    """The most probable reading of a row of segments, left to right.

    Each segment is read whole, or (when wide) as two touching digits cut at one of the offered
    places; two neighbours may be read as one digit written in two strokes. A reading scores
    the sum of its digits' log-probabilities, less SPLIT_COST or JOIN_COST for every split or join, so
    the segmentation is changed only when the model is clearly surer of the result.
    ``logp_rows``: each row's log-probability to score with (default: its ``probability``); the
    predictor passes the model's own, uncalibrated ones, the scale the two costs were tuned on.
    """
    if logp_rows is None:
        logp_rows = [math.log(max(it.probability, 1e-12)) for it in read]

    def logp(*rows: int) -> float:
        return sum(logp_rows[r] for r in rows)

    best: list[tuple[float, list[int]]] = [(0.0, [])]  # best[i]: the rows read for the first i segments
    for i in range(prep.n_main):
        options = [(logp(i), [i])]  # row i is segment i, read whole
        options += [(logp(r, r + 1) - SPLIT_COST, [r, r + 1]) for r in prep.halves.get(i, [])]
        score, rows = max(options, key=lambda o: o[0])
        candidate = (best[i][0] + score, best[i][1] + rows)
        if i >= 1 and (i - 1) in prep.joins:  # segments i-1 and i as one digit
            joined = prep.joins[i - 1]
            candidate = max(
                candidate, (best[i - 1][0] + logp(joined) - JOIN_COST, best[i - 1][1] + [joined]), key=lambda c: c[0]
            )
        best.append(candidate)
    return [read[r] for r in best[-1][1]]


def fold_batchnorm(model: torch.nn.Module) -> torch.nn.Module:
    """An eval-mode copy of ``model`` with each Conv2d -> BatchNorm2d pair inside an ``nn.Sequential``
    replaced by one conv (``torch.nn.utils.fusion.fuse_conv_bn_eval``); other layers as they were.

    Conv2d -> MaxPool2d -> BatchNorm2d (``fast`` since checkpoint format 2) folds too where every
    channel's BatchNorm scale is positive: then max(s*x + b) = s*max(x) + b."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    def foldable(conv, bn) -> bool:
        return (
            type(conv) is torch.nn.Conv2d
            and type(bn) is torch.nn.BatchNorm2d
            and bn.track_running_stats
            and bn.num_features == conv.out_channels
        )

    def positive_scale(bn: torch.nn.BatchNorm2d) -> bool:
        return bn.weight is None or bool((bn.weight > 0).all())  # running_var + eps is always positive

    model = copy.deepcopy(model).eval()
    for seq in [m for m in model.modules() if isinstance(m, torch.nn.Sequential)]:
        layers = list(seq)
        for i in reversed(range(len(layers) - 1)):
            conv, nxt = layers[i], layers[i + 1]
            if foldable(conv, nxt):
                seq[i] = fuse_conv_bn_eval(conv, nxt)
                del seq[i + 1]
            elif (
                i + 2 < len(layers)
                and type(nxt) is torch.nn.MaxPool2d
                and foldable(conv, layers[i + 2])
                and positive_scale(layers[i + 2])
            ):
                seq[i] = fuse_conv_bn_eval(conv, layers[i + 2])
                del seq[i + 2]
    return model


def _channels_last(x: torch.Tensor) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x


class Predictor:
    """A loaded model plus the preprocessing its checkpoint asks for."""

    def __init__(self, model: torch.nn.Module | OnnxModel, ckpt: dict, device: str | torch.device = "cpu"):
        # channels_last: oneDNN's convolutions skip a layout reorder; the shipped model's forward at
        # batch 1-2 on one CPU thread takes ~25% less (0.86 -> 0.67 ms), outputs equal to ~1e-6.
        # BatchNorms folded into the convs: 0.66 -> 0.54 ms more (fold_batchnorm; the caller's model is not changed).
        # An ONNX model (onnxruntime) was folded at export and takes its input as it comes.
        self.model = (
            fold_batchnorm(model).to(memory_format=torch.channels_last) if isinstance(model, torch.nn.Module) else model
        )
        self.device = torch.device(device)
        self.classes: list[str] = list(ckpt["classes"])
        self.channels = int(ckpt["channels"])
        self.image_size = int(ckpt["image_size"])
        self.mean = tuple(float(m) for m in ckpt["mean"])
        self.std = tuple(float(s) for s in ckpt["std"])
        # Reported probabilities are softmax(logits / temperature), calibrated where `digitlab export`
        # fitted it; the segmentation still weighs readings with the model's own (temperature 1).
        self.temperature = check_temperature(ckpt.get("temperature", 1.0))  # finite and > 0, or DigitlabError
        self.uncertain_below = CALIBRATED_UNCERTAIN_BELOW if "temperature" in ckpt else UNCERTAIN_BELOW
        task = ckpt.get("task")
        if task not in ("digits", "images"):
            task = "digits" if self.channels == 1 and self.classes == DIGIT_CLASSES else "images"
        self.task: str = task
        metrics = ckpt.get("metrics") or {}
        accuracy = metrics.get("test_acc", metrics.get("accuracy"))
        self.info: dict = {
            "name": ckpt["model_name"],
            "classes": self.classes,
            "task": self.task,
            "channels": self.channels,
            "image_size": self.image_size,
            "accuracy": float(accuracy) if accuracy is not None else None,
            "dataset": ckpt.get("dataset"),
            "temperature": self.temperature if "temperature" in ckpt else None,
        }

    @classmethod
    def load(cls, checkpoint: str | Path | None = None, device: str = "cpu") -> Predictor:
        """Load a checkpoint (a file or a run folder), or a ``.onnx`` file of `digitlab export --format onnx`
        (run by onnxruntime); None loads the shipped default model.

        Raises:
            DigitlabError: missing or invalid checkpoint.
        """
        path = default_model_path() if checkpoint is None else checkpoint
        if is_onnx_path(path):
            onnx_model, fields = load_onnx(path)
            return cls(onnx_model, fields, "cpu")  # onnxruntime's CPU provider
        ckpt = load_checkpoint(path)
        model = model_from_checkpoint(ckpt, device)
        return cls(model, ckpt, device)

    # -- the two halves of a prediction -------------------------------------------------

    def _prepare(self, image, multi: bool) -> _Prepared:
        """Decode and preprocess one image. Raises DigitlabError for unreadable input."""
        t0 = time.perf_counter()
        source = _source_name(image)
        img = image if isinstance(image, Image.Image) else load_image(image)
        if self.task != "digits":
            arr = generic_image(img, channels=self.channels, image_size=self.image_size)
            x = normalize(arr, self.mean, self.std).unsqueeze(0)
            return _Prepared(source, x, [arr], [None], (time.perf_counter() - t0) * 1000, n_main=1)
        found = preprocess_digits(
            img, mean=self.mean, std=self.std, multi=multi, image_size=self.image_size, lazy=True
        )  # cuts and joins: only those the model's reading needs (add_offers)
        rows = found.digits
        ms = (time.perf_counter() - t0) * 1000
        return _Prepared(
            source, found.tensor, [r.image for r in rows], [r.box for r in rows], ms, len(rows), digits=list(rows)
        )

    @torch.inference_mode()
    def _probabilities(self, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """The model's own softmax probabilities (N, classes; uncalibrated) for a batch of inputs, in chunks."""
        out = [
            torch.softmax(self.model(_channels_last(x[i : i + batch_size].to(self.device))).float(), dim=1).cpu()
            for i in range(0, x.shape[0], batch_size)
        ]
        probs = out[0] if len(out) == 1 else torch.cat(out) if out else torch.empty(0, len(self.classes))
        if not bool(torch.isfinite(probs).all()):  # NaN never reaches an answer (nor JSON, which has no NaN)
            raise DigitlabError("the model's output is NaN or infinite for this image; its checkpoint is broken")
        return probs

    def _result(self, prep: _Prepared, probs: torch.Tensor, top_k: int, model_ms: float) -> Prediction:
        k = max(1, min(top_k, len(self.classes)))
        raw_logp = [math.log(max(float(p.max()), 1e-12)) for p in probs]  # the segmentation's scale
        if self.temperature != 1.0:  # softmax(log p / T) == softmax(logits / T): the softmax's constant cancels
            probs = torch.softmax(probs.clamp_min(1e-30).log() / self.temperature, dim=1)
        read = []
        for p, img, box in zip(probs, prep.images, prep.boxes):
            best = torch.topk(p, k)
            index = int(best.indices[0])
            probability = float(best.values[0])
            read.append(
                DigitPrediction(
                    label=self.classes[index],
                    index=index,
                    probability=probability,
                    probs=[float(v) for v in p],
                    top_k=[(self.classes[int(i)], float(v)) for v, i in zip(best.values, best.indices)],
                    box=box,
                    uncertain=probability < self.uncertain_below,
                    input_image=img,
                )
            )
        items = _best_reading(read, prep, raw_logp)
        elapsed = prep.ms + model_ms
        if not items:
            return Prediction(prep.source, "empty", None, [], None, elapsed)
        text = "".join(it.label for it in items) if self.task == "digits" else items[0].label
        status = "uncertain" if any(it.uncertain for it in items) else "ok"
        return Prediction(prep.source, status, text, items, None, elapsed)

    # -- public -----------------------------------------------------------------------

    def predict(
        self,
        image: Image.Image | bytes | str | Path,
        *,
        top_k: int = 3,
        multi: bool = True,
        include_input: bool = False,
    ) -> Prediction:
        """Read one image: a PIL image, encoded bytes, or a path.

        Args:
            image: the input; bytes and paths go through ``load_image`` (safe decoding).
            top_k: how many best classes each item lists.
            multi: read a row of digits as a number; False reads all ink as one digit.
            include_input: accepted for symmetry with ``Prediction.to_dict``; the model's
                input image (28x28 uint8, tiny) is always on each item as ``input_image``,
                and ``to_dict(include_input=True)`` puts it in the JSON.

        Returns:
            A ``Prediction``; unreadable input gives ``status="error"`` rather than an exception.
        """
        return self.predict_many([image], top_k=top_k, multi=multi)[0]

    def predict_many(
        self,
        sources: list,
        *,
        top_k: int = 3,
        multi: bool = True,
        batch_size: int = 256,
    ) -> list[Prediction]:
        """Read many images with the model calls batched across them; one ``Prediction`` each, in order."""
        prepared: list[_Prepared | Prediction] = []
        for src in sources:
            t0 = time.perf_counter()
            try:
                prepared.append(self._prepare(src, multi))
            except Exception as exc:  # one bad file must not stop the others
                msg = (
                    str(exc)
                    if isinstance(exc, DigitlabError)
                    else f"cannot process image ({type(exc).__name__}: {exc})"
                )
                ms = (time.perf_counter() - t0) * 1000
                prepared.append(Prediction(_source_name(src), "error", None, [], msg, ms))
        ok = [p for p in prepared if isinstance(p, _Prepared)]
        t0 = time.perf_counter()
        probs = self._batched([p.x for p in ok], batch_size)
        model_ms = (time.perf_counter() - t0) * 1000
        # Second round, digit models only: the cuts and joins that could still change a reading.
        extra = [p.add_offers(pr) if p.digits else None for p, pr in zip(ok, probs)]
        if any(e is not None for e in extra):  # most images (a confident canvas) need no second call
            t1 = time.perf_counter()
            more = self._batched([e if e is not None else p.x[:0] for p, e in zip(ok, extra)], batch_size)
            model_ms += (time.perf_counter() - t1) * 1000
            for i, (p, e) in enumerate(zip(ok, extra)):
                if e is not None:
                    p.x = torch.cat([p.x, e])
                    probs[i] = torch.cat([probs[i], more[i]])
        n_total = max(1, sum(p.x.shape[0] for p in ok))
        read = iter(probs)  # in the order of ``ok``
        results = []
        for p in prepared:
            if isinstance(p, Prediction):
                results.append(p)
                continue
            n = p.x.shape[0]
            results.append(self._result(p, next(read), top_k, model_ms * n / n_total))
        return results

    def _batched(self, xs: list[torch.Tensor], batch_size: int) -> list[torch.Tensor]:
        """Probabilities for each image's rows, with one batched model call across all images."""
        rows = [x for x in xs if x.shape[0]]
        probs = self._probabilities(torch.cat(rows), batch_size) if rows else torch.empty(0, len(self.classes))
        return list(torch.split(probs, [x.shape[0] for x in xs]))
