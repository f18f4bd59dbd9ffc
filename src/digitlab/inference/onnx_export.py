"""`digitlab export --format onnx`: a checkpoint as an ONNX graph, checked against PyTorch in onnxruntime.

What the graph takes and returns, and its metadata, are described in ``digitlab.inference.onnx``.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from digitlab.engine.checkpoint import model_from_checkpoint
from digitlab.engine.plan import trained_with_tta
from digitlab.errors import DigitlabError
from digitlab.inference.fold import fold_batchnorm
from digitlab.inference.onnx import INPUT_NAME, METADATA_FORMAT, OUTPUT_NAME, OnnxModel, require

OPSET = 17
CHECK_IMAGES = 512  # real test images compared against PyTorch at export time


class _Normalised(nn.Module):
    """The model behind its normalisation, so the graph takes pixels in [0, 1]."""

    mean: torch.Tensor  # (1, C, 1, 1) buffers
    std: torch.Tensor

    def __init__(self, model: nn.Module, mean: list[float], std: list[float]):
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (N, C, H, W) in [0, 1]
        return self.model((x - self.mean) / self.std)


def onnx_metadata(ckpt: dict) -> dict[str, str]:
    """The model's metadata entries (strings, as ONNX stores them)."""
    data_cfg = (ckpt.get("config") or {}).get("data") or {}
    info = {
        "format": METADATA_FORMAT,
        "model_name": ckpt["model_name"],
        "model_args": ckpt["model_args"],
        "dataset": ckpt.get("dataset"),
        "dataset_note": ckpt.get("dataset_note"),
        "task": ckpt.get("task"),
        "classes": list(ckpt["classes"]),
        "channels": int(ckpt["channels"]),
        "image_size": int(ckpt["image_size"]),
        "mean": [float(m) for m in ckpt["mean"]],
        "std": [float(s) for s in ckpt["std"]],
        "temperature": float(ckpt["temperature"]) if "temperature" in ckpt else None,
        "metrics": {k: v for k, v in (ckpt.get("metrics") or {}).items() if isinstance(v, (int, float, str))},
        "checkpoint_digest": ckpt.get("digest"),  # of the checkpoint exported: ties a twin to its .pt
        # What `digitlab eval model.onnx` needs to evaluate as `digitlab eval` does the checkpoint:
        "final_tta": trained_with_tta(ckpt),
        "data": {k: v for k, v in data_cfg.items() if k in ("data_dir", "grayscale", "image_size")},
        "input": f"{INPUT_NAME}: float32 (N, C, H, W) pixels in [0, 1] (uint8 / 255); normalisation is in the graph",
    }
    return {
        "digitlab": json.dumps(info),
        "classes": json.dumps(info["classes"]),
        "temperature": "" if info["temperature"] is None else repr(info["temperature"]),
        "image_size": str(info["image_size"]),
        "channels": str(info["channels"]),
        "task": str(info["task"] or ""),
    }


@dataclass
class OnnxExport:
    path: Path
    max_abs_diff: float  # largest |logit| difference between onnxruntime and PyTorch on the check inputs
    agree: float  # fraction of check inputs with the same top class
    n_checked: int
    real_inputs: bool  # True: the dataset's test images; False: random pixels (no data)


def export_onnx(ckpt: dict, path: str | Path, check_images: torch.Tensor | None = None) -> OnnxExport:
    """Write ``ckpt``'s model as ONNX at ``path`` and check it against PyTorch in onnxruntime.

    Args:
        ckpt: a digitlab checkpoint (full or slim).
        path: the .onnx file to write.
        check_images: uint8 ``(N, C, H, W)`` images to compare the two on (the dataset's test
            split); None compares on random pixels.
    """
    onnx = require("onnx")
    model = model_from_checkpoint(ckpt)  # float32, eval mode
    graph = _Normalised(fold_batchnorm(model), ckpt["mean"], ckpt["std"]).eval()
    c, s = int(ckpt["channels"]), int(ckpt["image_size"])
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        # torch 2.9+ calls the TorchScript exporter legacy; it needs no onnxscript and handles every model here.
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            torch.onnx.export(
                graph,
                (torch.rand(1, c, s, s),),
                str(path),
                dynamo=False,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                opset_version=OPSET,
            )
        except Exception as exc:  # an operation ONNX has no form for, in a model of your own
            path.unlink(missing_ok=True)
            raise DigitlabError(
                f"cannot export model {ckpt['model_name']!r} to ONNX ({type(exc).__name__}: {str(exc)[:300]})"
            ) from exc
    proto = onnx.load(str(path))
    for key, value in onnx_metadata(ckpt).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.doc_string = f"digitlab {ckpt['model_name']} ({ckpt.get('dataset', '?')}); input {INPUT_NAME} in [0, 1]"
    data = proto.SerializeToString()
    path.write_bytes(data)

    real = check_images is not None
    if check_images is not None:
        x = check_images[:CHECK_IMAGES].float().div(255.0)
    else:
        x = torch.rand(64, c, s, s, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = model((x - graph.mean) / graph.std)  # the checkpoint's own model, unfolded, in PyTorch
    out = torch.from_numpy(OnnxModel(data)(x.numpy()))
    diff = float((out - ref).abs().max()) if len(x) else 0.0
    agree = float((out.argmax(1) == ref.argmax(1)).float().mean()) if len(x) else 1.0
    return OnnxExport(path, diff, agree, len(x), real)
