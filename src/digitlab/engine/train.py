"""The training loop: train_one_epoch(), evaluate(), lr_at(step), and train() that runs them.

No Trainer class and no callbacks: what a callback would do is a line in the loop.
The data are uint8 tensors on the training device; a batch is an index slice, augmented and
normalised as a whole (see ``digitlab.data.loader``).
"""

from __future__ import annotations

import csv
import io
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from digitlab.config import RunConfig, check_config
from digitlab.data.base import ImageData
from digitlab.data.loader import augment, default_augment, iterate_batches, normalize
from digitlab.engine import dist
from digitlab.engine.checkpoint import save_checkpoint, unwrap, write_atomically
from digitlab.engine.device import autocast, resolve_device, resolve_precision
from digitlab.engine.optim import build_optimizer, compiled_step, lr_at, model_kwargs, set_lr
from digitlab.errors import DigitlabError

DIGIT_DATASETS = ("mnist", "digits")


@dataclass
class EvalOutput:
    loss: float
    accuracy: float
    logits: torch.Tensor  # float32 (N, K) on CPU


@dataclass
class TrainResult:
    run_dir: Path
    history: list[dict] = field(default_factory=list)
    final_acc: float = 0.0
    best_acc: float = 0.0
    train_seconds: float = 0.0  # first training step to end of the last evaluation, data in memory
    compile_seconds: float = 0.0  # --compile: time spent compiling before the clock started (all resumes)
    metrics: dict = field(default_factory=dict)  # the final evaluation report (precision, recall, ...)
    tta: bool = False  # the final evaluation averaged test-time augmented views


def _tta_views(x: torch.Tensor) -> list[torch.Tensor]:
    """Test-time augmentation: horizontal flip for colour images, one-pixel shifts for digits."""
    if x.shape[1] == 3:
        return [x, x.flip(-1)]
    padded = F.pad(x, (1, 1, 1, 1))
    h, w = x.shape[-2:]
    return [x] + [
        padded[..., 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w] for dy, dx in ((0, 1), (0, -1), (1, 0), (-1, 0))
    ]


@torch.no_grad()
def evaluate(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    *,
    batch_size: int = 1000,
    precision: str = "fp32",
    tta: bool = False,
    channels_last: bool = False,
) -> EvalOutput:
    """Loss, accuracy and logits of ``model`` on uint8 images ``x`` with labels ``y``."""
    model.eval()
    device = x.device
    chunks = []
    for start in range(0, x.shape[0], batch_size):
        xb = normalize(x[start : start + batch_size], mean, std)  # (B, C, H, W) float
        if channels_last:
            xb = xb.contiguous(memory_format=torch.channels_last)
        with autocast(device, precision):
            views = _tta_views(xb) if tta else [xb]
            logits = sum(model(v).float() for v in views) / len(views)
        chunks.append(logits.float())
    logits = torch.cat(chunks) if chunks else torch.zeros(0, 1, device=device)
    loss = F.cross_entropy(logits, y).item() if len(y) else float("nan")
    acc = (logits.argmax(1) == y).float().mean().item() if len(y) else float("nan")
    return EvalOutput(loss, acc, logits.cpu())


def final_tta(tta: bool, augment: str, dataset: str) -> bool:
    """Whether the final evaluation uses test-time augmentation: TTA's views are shifts (and flips for
    colour images), so only for a model trained with augmentation (``augment`` "auto" resolved by dataset)."""
    aug_kind = default_augment(dataset) if augment == "auto" else augment
    return tta and aug_kind != "none"


def trained_with_tta(ckpt: dict) -> bool:
    """Whether the training that wrote ``ckpt`` evaluated its final epoch with test-time augmentation."""
    cfg = ckpt.get("config") or {}
    return final_tta(
        bool(cfg.get("train", {}).get("tta", False)),
        cfg.get("data", {}).get("augment", "none"),
        ckpt.get("dataset", ""),
    )


def train_one_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    data: ImageData,
    cfg: RunConfig,
    *,
    step: int,
    total_steps: int,
    generator: torch.Generator,
    precision: str,
    aug_kind: str,
    info: dist.DistInfo = dist.DistInfo(),
    ema: nn.Module | None = None,
    progress=None,
    optimizer_step: Callable[[], object] | None = None,
) -> tuple[dict, int]:
    """One pass over the training set; returns (train loss/accuracy, the next global step)."""
    t = cfg.train
    model.train()
    device = data.train_x.device
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    seen = 0
    batches = iterate_batches(
        data.train_x, data.train_y, t.batch_size * info.world_size, shuffle=True, generator=generator, drop_last=False
    )
    for i, (xb, yb) in enumerate(batches):
        if t.dry_run and i >= 3:
            break
        if info.enabled:  # each rank takes its share of the global batch
            xb, yb = xb[info.rank :: info.world_size], yb[info.rank :: info.world_size]
        set_lr(optimizer, lr_at(step, total_steps, t))
        xb = normalize(augment(xb, aug_kind, generator), data.mean, data.std)  # (B, C, H, W) float
        if t.channels_last:
            xb = xb.contiguous(memory_format=torch.channels_last)
        with autocast(device, precision):
            logits = model(xb)
        loss = F.cross_entropy(logits.float(), yb, label_smoothing=t.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        (optimizer_step or optimizer.step)()
        if ema is not None:
            ema.update_parameters(unwrap(model))
        loss_sum += loss.detach() * yb.shape[0]
        correct += (logits.detach().argmax(1) == yb).sum()
        seen += yb.shape[0]
        step += 1
        if progress is not None:
            progress.advance(yb.shape[0] * info.world_size)
    totals = dist.all_reduce_sum(
        torch.stack([loss_sum.float(), correct.float(), torch.tensor(float(seen), device=device)]), info
    )
    n = max(totals[2].item(), 1.0)
    return {"train_loss": totals[0].item() / n, "train_acc": totals[1].item() / n}, step


def compile_for_training(
    model: nn.Module, data: ImageData, cfg: RunConfig, *, precision: str, info: dist.DistInfo = dist.DistInfo()
) -> tuple[nn.Module, float]:
    """``torch.compile`` the model and compile it now, before the training clock starts; returns (compiled, seconds).

    Shapes are static (``dynamic=False``: static kernels are the fast ones), so every batch size an epoch
    will see is compiled here: the full batch and the smaller last one. The warm-up runs forward and
    backward on real images, then restores weights, BatchNorm statistics, gradients and the RNG, so the
    training that follows starts from exactly where it would have started without it.
    """
    t = cfg.train
    t0 = time.perf_counter()
    compiled = torch.compile(model, dynamic=False)
    n, global_batch = data.train_x.shape[0], t.batch_size * info.world_size
    last = n % global_batch if n > global_batch and not t.dry_run else 0  # a dry run never reaches the last batch
    sizes = [min(global_batch, n)] + ([last] if last else [])
    state = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    was_training = model.training
    model.train()
    for size in sizes:
        xb, yb = data.train_x[:size][info.rank :: info.world_size], data.train_y[:size][info.rank :: info.world_size]
        if yb.shape[0] == 0:
            continue
        xb = normalize(xb, data.mean, data.std)  # (B, C, H, W) float
        if t.channels_last:
            xb = xb.contiguous(memory_format=torch.channels_last)
        with autocast(xb.device, precision):
            logits = compiled(xb)
        F.cross_entropy(logits.float(), yb).backward()
    model.zero_grad(set_to_none=True)
    model.load_state_dict(state)
    torch.set_rng_state(rng)
    model.train(was_training)
    return compiled, time.perf_counter() - t0


def load_data(cfg: RunConfig) -> ImageData:
    """Load the configured dataset into memory (uint8), with limits and validation split applied."""
    from digitlab.data import load_dataset
    from digitlab.data.locate import resolve_data_dir

    d = cfg.data
    d.data_dir = resolve_data_dir(d.data_dir)  # absolute in config.json: resume and eval find it from anywhere
    data = load_dataset(d.dataset, d.data_dir, download=d.download, grayscale=d.grayscale, image_size=d.image_size)
    if d.limit_train or d.limit_test:
        data = data.subset(d.limit_train, d.limit_test)
    if d.val_fraction:
        data = data.split_validation(d.val_fraction, seed=cfg.train.seed)
    return data


def _task(data: ImageData) -> str:
    digits = data.channels == 1 and data.classes == [str(i) for i in range(10)]
    return "digits" if data.name in DIGIT_DATASETS or (digits and data.name != "fashion-mnist") else "images"


def one_view_temperature(
    model: nn.Module, data: ImageData, final_eval: EvalOutput, tta: bool, *, precision: str, channels_last: bool
) -> float:
    """The temperature that calibrates ``model``'s probabilities on the evaluation split, one view per
    image as `digitlab predict` reads them (the final evaluation's logits, unless they averaged TTA views)."""
    from digitlab.evaluate.calibration import fit_temperature

    if tta:
        final_eval = evaluate(
            model, data.test_x, data.test_y, data.mean, data.std, precision=precision, channels_last=channels_last
        )
    return fit_temperature(final_eval.logits, data.test_y.cpu())


def _calibrate_best(path: Path, data: ImageData) -> None:
    """best.pt from an earlier epoch than the last gets its own temperature too (the last epoch's
    checkpoints got theirs as they were saved), so that any checkpoint of a finished run is calibrated."""
    from digitlab.engine.checkpoint import load_checkpoint
    from digitlab.evaluate.calibration import calibrate_checkpoint

    if not path.exists():
        return
    ckpt = load_checkpoint(path)
    if "temperature" not in ckpt:
        ckpt["temperature"] = calibrate_checkpoint(ckpt, data)[0]
        save_checkpoint(path, ckpt)


def make_checkpoint(
    model: nn.Module,
    cfg: RunConfig,
    data: ImageData,
    model_args: dict,
    *,
    epoch: int,
    history: list[dict],
    metrics: dict,
) -> dict:
    """The inference part of a checkpoint: enough to rebuild the model and preprocess its input."""
    return {
        "model_name": cfg.model.model,
        "model_args": model_args,
        "state_dict": {k: v.detach().cpu() for k, v in unwrap(model).state_dict().items()},
        "dataset": data.name,
        "task": _task(data),
        "classes": list(data.classes),
        "channels": data.channels,
        "image_size": data.image_size,
        "mean": list(data.mean),
        "std": list(data.std),
        "config": cfg.to_dict(),
        "epoch": epoch,
        "history": history,
        "metrics": metrics,
    }


def _rng_state(generator: torch.Generator) -> dict:
    state = {"generator": generator.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict, generator: torch.Generator) -> None:
    generator.set_state(state["generator"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _write_metrics_csv(path: Path, history: list[dict]) -> None:
    """Rewrite metrics.csv whole (``write_atomically``): a Ctrl-C mid-write keeps the previous one."""
    if not history:
        return
    text = io.StringIO(newline="")
    fields = list(dict.fromkeys(k for row in history for k in row))  # rows from older versions lack columns
    w = csv.DictWriter(text, fieldnames=fields)
    w.writeheader()
    w.writerows(history)
    write_atomically(path, lambda f: f.write(text.getvalue().encode()))


def train(
    cfg: RunConfig, *, data: ImageData | None = None, resume: dict | None = None, quiet: bool = False, console=None
) -> TrainResult:
    """Run a whole training: load data, build the model, loop over epochs, save, evaluate, report.

    Args:
        cfg: the resolved run configuration.
        data: an already loaded dataset (tests, bench); None loads ``cfg.data``.
        resume: a ``last.pt`` checkpoint dict to continue from (its run directory is reused).
        quiet: no progress bars or per-epoch lines.
    """
    from digitlab.engine.reporting import EpochPrinter, finish_run, prepare_run_dir

    check_config(cfg)
    t = cfg.train
    info = dist.detect()
    device = dist.setup(info, resolve_device(t.device))
    precision = resolve_precision(t.precision, device)
    dist.set_threads(info, t.threads)  # --threads, or under torchrun the cores shared by the ranks
    torch.manual_seed(t.seed + info.rank)
    generator = torch.Generator().manual_seed(t.seed)  # shuffling and augmentation; same on every rank

    if data is None:
        data = load_data(cfg)
    data = data.to(device)
    aug_kind = default_augment(data.name) if cfg.data.augment == "auto" else cfg.data.augment
    tta = final_tta(t.tta, cfg.data.augment, data.name)

    model_args = model_kwargs(cfg.model, data)
    from digitlab.models import create_model

    model = create_model(cfg.model.model, **model_args).to(device)
    if t.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model, t)
    ema = None
    if t.ema:
        ema = torch.optim.swa_utils.AveragedModel(
            model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(0.999), use_buffers=True
        )

    history: list[dict] = []
    start_epoch, best_acc = 0, -1.0
    if resume is not None:
        if resume["model_name"] != cfg.model.model:
            raise DigitlabError(f"cannot resume: checkpoint holds {resume['model_name']!r}, not {cfg.model.model!r}")
        unwrap(model).load_state_dict(resume["state_dict"] if ema is None else resume["raw_state_dict"])
        optimizer.load_state_dict(resume["optimizer"])
        if ema is not None:
            ema.load_state_dict(resume["ema"])
        _set_rng_state(resume["rng"], generator)
        start_epoch, history = resume["epoch"], list(resume["history"])
        best_acc = max((h["test_acc"] for h in history if h.get("test_acc") is not None), default=-1.0)

    run_dir = prepare_run_dir(cfg, resume is not None, info.is_main)
    train_model, compile_seconds = model, 0.0
    if t.compile:  # before the clock: compile time is reported on its own (compile_time in metrics.csv)
        train_model, compile_seconds = compile_for_training(model, data, cfg, precision=precision, info=info)
    # Compiled at its first call, inside the clock (~2 s the first time in a process, 0.4 s after).
    optimizer_step = compiled_step(optimizer) if t.compile_step else optimizer.step
    if info.enabled:
        train_model = nn.parallel.DistributedDataParallel(train_model)
    eval_model = ema.module if ema is not None else model

    steps_per_epoch = math.ceil(data.train_x.shape[0] / (t.batch_size * info.world_size))
    total_steps = steps_per_epoch * t.epochs
    step = start_epoch * steps_per_epoch
    printer = EpochPrinter(data.train_x.shape[0], quiet or not info.is_main, console)
    elapsed = history[-1]["elapsed"] if history else 0.0
    result = TrainResult(run_dir)
    last_eval = None
    clock0, elapsed0 = time.perf_counter(), elapsed  # the honest clock: saving between epochs counts too
    for epoch in range(start_epoch + 1, t.epochs + 1):
        t0 = time.perf_counter()
        with printer.epoch(epoch, t.epochs) as progress:
            row, step = train_one_epoch(
                train_model,
                optimizer,
                data,
                cfg,
                step=step,
                total_steps=total_steps,
                generator=generator,
                precision=precision,
                aug_kind=aug_kind,
                info=info,
                ema=ema,
                progress=progress,
                optimizer_step=optimizer_step,
            )
        t1 = time.perf_counter()
        do_eval = epoch == t.epochs or epoch % max(t.eval_every, 1) == 0
        if do_eval:
            last_eval = evaluate(
                eval_model,
                data.test_x,
                data.test_y,
                data.mean,
                data.std,
                precision=precision,
                tta=tta and epoch == t.epochs,
                channels_last=t.channels_last,
            )
        t2 = time.perf_counter()
        elapsed = elapsed0 + (t2 - clock0)
        row = {
            "epoch": epoch,
            "lr": float(optimizer.param_groups[0]["lr"]),
            **row,
            "test_loss": last_eval.loss if do_eval else None,
            "test_acc": last_eval.accuracy if do_eval else None,
            "train_time": t1 - t0,
            "eval_time": t2 - t1,
            "elapsed": elapsed,
            "compile_time": compile_seconds if epoch == start_epoch + 1 else 0.0,
        }
        history.append(row)
        printer.row(row)
        if info.is_main:
            ckpt = make_checkpoint(
                eval_model,
                cfg,
                data,
                model_args,
                epoch=epoch,
                history=history,
                metrics={"test_acc": row["test_acc"], "test_loss": row["test_loss"]},
            )
            if epoch == t.epochs and len(data.test_y):  # after the clock: the finished model (always evaluated)
                ckpt["temperature"] = one_view_temperature(
                    eval_model, data, last_eval, tta, precision=precision, channels_last=t.channels_last
                )
            if do_eval and row["test_acc"] > best_acc:
                best_acc = row["test_acc"]
                save_checkpoint(run_dir / "best.pt", ckpt)
            resume_state = {"optimizer": optimizer.state_dict(), "rng": _rng_state(generator)}
            if ema is not None:
                resume_state |= {
                    "ema": ema.state_dict(),
                    "raw_state_dict": {k: v.cpu() for k, v in unwrap(model).state_dict().items()},
                }
            save_checkpoint(run_dir / "last.pt", ckpt | resume_state)  # written last: it marks the epoch as done
            _write_metrics_csv(run_dir / "metrics.csv", history)
        if t.dry_run:
            break

    result.history = history
    result.best_acc = best_acc
    result.final_acc = history[-1]["test_acc"] if history else float("nan")
    result.train_seconds = history[-1]["elapsed"] if history else 0.0
    finished = bool(history) and history[-1]["epoch"] == t.epochs
    result.tta = tta and finished
    result.compile_seconds = sum(h.get("compile_time", 0.0) for h in history)
    if info.is_main and last_eval is not None:
        if finished and len(data.test_y):
            _calibrate_best(run_dir / "best.pt", data)
        result.metrics = finish_run(run_dir, history, data, last_eval, printer.console, quiet)
    del train_model  # the DDP wrapper holds the process group: free it before the group is shut down
    dist.teardown(info)
    return result
