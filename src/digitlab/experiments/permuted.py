"""Seed 002's experiment: a fully-connected net and a CNN of equal size, on real and on shuffled pixels.

A convolution assumes that neighbouring pixels belong together. Shuffle the pixels with one
fixed permutation (the same for every image, train and test) and that assumption is false,
while a fully-connected layer, which never knew which pixels were neighbours, loses nothing.
So the CNN wins on normal images and loses its edge on permuted ones; the MLP scores the
same on both. Both models train exactly as seed 002 trained them: SGD, lr 0.01, momentum 0.5,
batch 64, no augmentation.
"""

from __future__ import annotations

import time
from dataclasses import asdict, replace

import torch

from digitlab.config import DataConfig, RunConfig, TrainConfig
from digitlab.data.base import ImageData
from digitlab.engine.device import resolve_device
from digitlab.engine.dist import DistInfo
from digitlab.engine.optim import build_optimizer
from digitlab.engine.plan import resolve
from digitlab.engine.train import evaluate, train_one_epoch
from digitlab.models import create_model
from digitlab.models.mlp import mlp_params
from digitlab.provenance import provenance

MODELS = ("mlp", "cnn-small")
CONDITIONS = ("normal", "permuted")


def permute_pixels(x: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """Move pixel ``perm[i]`` to position ``i`` in every image; channels move together. (N, C, H, W)."""
    n, c, h, w = x.shape
    return x.reshape(n, c, h * w)[:, :, perm.to(x.device)].reshape(n, c, h, w)


def matched_hidden(in_features: int, num_classes: int, target_params: int) -> int:
    """The mlp width whose parameter count is closest to ``target_params`` (seed 002: 8 for 6,422)."""
    widths = range(1, max(2, target_params // max(in_features, 1) + 2))  # (in + 1) * h alone exceeds beyond
    return min(widths, key=lambda h: abs(mlp_params(in_features, h, num_classes) - target_params))


def _train_and_test(name: str, kwargs: dict, data: ImageData, cfg: RunConfig, device: torch.device) -> float:
    t = cfg.train
    torch.manual_seed(t.seed)  # the same initial weights for the normal and the permuted run
    generator = torch.Generator().manual_seed(t.seed)  # the same batch order, too
    model = create_model(name, **kwargs).to(device)
    optimizer = build_optimizer(model, t)
    plan = resolve(cfg, data, device, DistInfo())  # cfg says fp32 and no augmentation
    step = 0
    for _ in range(t.epochs):
        _, step, _ = train_one_epoch(model, optimizer, data, plan, step=step, generator=generator)
    return evaluate(model, data.test_x, data.test_y, data.mean, data.std).accuracy


def run_permuted(
    data: ImageData,
    *,
    epochs: int = 1,
    seed: int = 0,
    batch_size: int = 64,
    lr: float = 0.01,
    momentum: float = 0.5,
    n_feature: int = 6,
    hidden: int | None = None,
    device: str = "auto",
) -> dict:
    """Train ``mlp`` and ``cnn-small`` on normal and on pixel-permuted images; return the accuracy table.

    Args:
        data: the dataset (any size the CNN accepts: 16x16 or more).
        epochs: passes over the training set for each of the four runs (seed 002: 1).
        seed: seeds the permutation, the initial weights and the batch order.
        batch_size, lr, momentum: SGD settings, seed 002's by default.
        n_feature: feature maps of the CNN (seed 002: 6).
        hidden: mlp width; None picks the width whose parameter count is closest to the CNN's.
        device: auto, cpu, cuda, ...

    Returns:
        ``{"table": {model: {"normal": acc, "permuted": acc}}, "params", "model_args",
        "seconds", "dataset", "n_train", "n_test", "epochs", "seed", "config", "provenance"}``
        with accuracies as fractions in [0, 1].
    """
    dev = resolve_device(device)
    cfg = RunConfig(
        data=DataConfig(augment="none"),  # augmentation would move pixels the MLP cannot follow
        train=TrainConfig(
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            optimizer="sgd",
            momentum=momentum,
            nesterov=False,
            weight_decay=0.0,
            schedule="none",
            label_smoothing=0.0,
            seed=seed,
            device=str(dev),
            precision="fp32",
            channels_last=False,
        ),
    )
    shape = {"num_classes": data.num_classes, "in_channels": data.channels, "image_size": data.image_size}
    cnn_args = {**shape, "n_feature": n_feature}
    cnn_params = sum(p.numel() for p in create_model("cnn-small", **cnn_args).parameters())
    in_features = data.channels * data.image_size**2
    if hidden is None:
        hidden = matched_hidden(in_features, data.num_classes, cnn_params)
    model_args = {"mlp": {**shape, "hidden": hidden}, "cnn-small": cnn_args}

    perm = torch.randperm(data.image_size**2, generator=torch.Generator().manual_seed(seed))
    datasets = {
        "normal": data.to(dev),
        "permuted": replace(
            data, train_x=permute_pixels(data.train_x, perm), test_x=permute_pixels(data.test_x, perm)
        ).to(dev),
    }
    table: dict[str, dict[str, float]] = {m: {} for m in MODELS}
    seconds: dict[str, dict[str, float]] = {m: {} for m in MODELS}
    for name in MODELS:
        for cond in CONDITIONS:
            t0 = time.perf_counter()
            table[name][cond] = _train_and_test(name, model_args[name], datasets[cond], cfg, dev)
            seconds[name][cond] = round(time.perf_counter() - t0, 2)
    return {
        "experiment": "permuted",
        "table": table,
        "params": {"mlp": mlp_params(in_features, hidden, data.num_classes), "cnn-small": cnn_params},
        "model_args": model_args,
        "seconds": seconds,
        "dataset": data.name,
        "n_train": int(data.train_x.shape[0]),
        "n_test": int(data.test_x.shape[0]),
        "epochs": epochs,
        "seed": seed,
        "config": asdict(cfg.train),
        "provenance": provenance(),
    }


def pixel_permutation(image_size: int, seed: int) -> torch.Tensor:
    """The fixed pixel order ``run_permuted`` uses for ``seed``."""
    return torch.randperm(image_size**2, generator=torch.Generator().manual_seed(seed))


def run_permuted_seeds(data: ImageData, *, seeds: list[int] | tuple[int, ...] = (0,), **kwargs) -> dict:
    """``run_permuted`` once per seed (a new permutation, initial weights and batch order each time).

    Returns ``run_permuted``'s dict with ``table`` the mean over seeds, plus ``std`` (the sample standard
    deviation, 0 for one seed), ``seeds`` and ``per_seed`` (each seed's own table).
    """
    from digitlab.evaluate.table import Spread

    if not seeds:
        raise ValueError("at least one seed")
    runs = [run_permuted(data, seed=s, **kwargs) for s in seeds]
    spread = {m: {c: Spread.of([r["table"][m][c] for r in runs]) for c in CONDITIONS} for m in MODELS}
    result = {k: v for k, v in runs[0].items() if k != "seed"}
    return result | {
        "table": {m: {c: v.mean for c, v in row.items()} for m, row in spread.items()},
        "std": {m: {c: v.std for c, v in row.items()} for m, row in spread.items()},
        "seeds": list(seeds),
        "per_seed": {str(s): r["table"] for s, r in zip(seeds, runs, strict=True)},
        "seconds": {m: {c: round(sum(r["seconds"][m][c] for r in runs), 2) for c in CONDITIONS} for m in MODELS},
    }


def permuted_table(result: dict):
    """A result of ``run_permuted_seeds`` (or ``run_permuted``) as a Table: text in a terminal, HTML in a
    notebook; several seeds show as mean ± standard deviation."""
    from digitlab.evaluate.table import Spread, Table, percent

    per_seed = result.get("per_seed") or {str(result.get("seed", 0)): result["table"]}
    rows = []
    for name in result["table"]:
        cells = {c: Spread.of([t[name][c] for t in per_seed.values()]) for c in CONDITIONS}
        rows.append({"model": name, "parameters": result["params"][name], **cells})
    several = len(per_seed) > 1
    title = f"test accuracy, {result['dataset']}, seed(s) {', '.join(per_seed)}" + (" (mean ± std)" if several else "")
    return Table(["model", "parameters", *CONDITIONS], rows, title=title, formats={c: percent for c in CONDITIONS})


def shuffled_examples(data: ImageData, seed: int = 0, n: int = 10) -> tuple[torch.Tensor, list[str]]:
    """The first ``n`` test images, then the same images with seed ``seed``'s pixel order: for ``image_grid``."""
    x = data.test_x[:n].cpu()
    shuffled = permute_pixels(x, pixel_permutation(data.image_size, seed))
    labels = [data.classes[int(y)] for y in data.test_y[:n]]
    return torch.cat([x, shuffled]), labels + [f"{c} shuffled" for c in labels]
