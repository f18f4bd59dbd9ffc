"""The slim checkpoint format that `digitlab export` writes and the package ships: what inference needs.

A training checkpoint (``digitlab.engine.checkpoint``) also holds the optimizer, scheduler, RNG
states and history; ``slim_checkpoint`` keeps only the keys below, which ``load_checkpoint``
reads like any checkpoint.
"""

from __future__ import annotations

INFERENCE_KEYS = (
    "model_name",
    "model_args",
    "state_dict",
    "dataset",
    "dataset_note",
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
