"""The training loop: ``train_step()``, ``train_one_epoch()`` and ``train()`` that runs them.

No Trainer class and no callbacks: what a callback would do is a line in the loop. ``train()``
resolves the config into a ``Plan`` once (engine/plan.py), claims the run directory, loops over
epochs, and then finishes the run from what the loop saved (engine/finish.py): the fp32 final
evaluation, calibration and reports. The data are uint8 tensors on the training device; a batch
is an index slice, augmented and normalised as a whole (see ``digitlab.data.loader``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from digitlab.config import RunConfig, check_config
from digitlab.data import load_dataset
from digitlab.data.base import ImageData
from digitlab.data.loader import ALTERNATING_FLIP, alternating_flip, augment, batch_indices, normalize
from digitlab.data.locate import resolve_data_dir
from digitlab.engine import dist
from digitlab.engine.checkpoint import check_compatible, save_checkpoint, unwrap
from digitlab.engine.device import autocast, keep_freed_memory
from digitlab.engine.evaluation import EvalOutput, evaluate, tta_views  # noqa: F401  (the loop's public names)
from digitlab.engine.finish import finish_run
from digitlab.engine.optim import build_optimizer, compiled_step, set_lr
from digitlab.engine.plan import Plan, check_folder, resolve, task_of, trained_with_tta  # noqa: F401
from digitlab.engine.reporting import EpochPrinter, StepLog, check_tensorboard
from digitlab.engine.rundir import claim_run_dir, run_dir_of, write_config, write_metrics_csv
from digitlab.errors import DigitlabError
from digitlab.models import create_model

DATA_INIT_IMAGES = 5000  # what a model's ``init_from_data`` sees: 4.8M 2x2 patches of CIFAR-10, in 0.1 s


@dataclass
class TrainResult:
    run_dir: Path
    history: list[dict] = field(default_factory=list)
    final_acc: float = 0.0  # the final evaluation's accuracy, fp32 (what `digitlab eval` reports too)
    best_acc: float = 0.0  # the best per-epoch evaluation (training precision), the epoch of best.pt
    train_seconds: float = 0.0  # first training step to end of the last evaluation, data in memory
    compile_seconds: float = 0.0  # --compile: time spent compiling before the clock started (all resumes)
    metrics: dict = field(default_factory=dict)  # the final evaluation's eval.json
    tta: bool = False  # the final evaluation averaged test-time augmented views


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    xb: torch.Tensor,
    yb: torch.Tensor,
    *,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    precision: str,
    channels_last: bool = True,
    label_smoothing: float = 0.0,
    optimizer_step: Callable[[], object] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimisation step on a uint8 batch (already augmented); returns (loss, logits), detached.

    The one step that training, ``digitlab bench`` and the step benchmarks all run.
    """
    x = normalize(xb, mean, std)  # (B, C, H, W) float
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with autocast(x.device, precision):
        logits = model(x)
    loss = F.cross_entropy(logits.float(), yb, label_smoothing=label_smoothing)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    (optimizer_step or optimizer.step)()
    return loss.detach(), logits.detach()


def train_one_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    data: ImageData,
    plan: Plan,
    *,
    step: int,
    generator: torch.Generator,
    ema: torch.optim.swa_utils.AveragedModel | None = None,
    progress=None,
    optimizer_step: Callable[[], object] | None = None,
    steps_log: StepLog | None = None,
) -> tuple[dict, int, torch.Tensor]:
    """One pass over the training set; returns (train loss/accuracy, the next global step, each step's loss)."""
    t, info = plan.train, plan.dist
    model.train()
    device = data.train_x.device
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    step_losses = torch.zeros(plan.steps_per_epoch, device=device)  # fetched once per epoch: no sync per step
    seen, first_step = 0, step
    epoch = step // max(plan.steps_per_epoch, 1)  # 0-based: the alternating flip's parity
    batches = batch_indices(data.train_x.shape[0], t.batch_size * info.world_size, generator=generator, device=device)
    for i, idx in enumerate(batches):
        if t.dry_run and i >= 3:
            break
        if info.enabled:  # each rank takes its share of the global batch
            idx = idx[info.rank :: info.world_size]
        xb, yb = data.train_x[idx], data.train_y[idx.to(data.train_y.device)]
        flip = alternating_flip(idx, epoch, t.seed) if plan.augment in ALTERNATING_FLIP else None
        lr = set_lr(optimizer, step, plan.total_steps, t)
        loss, logits = train_step(
            model,
            optimizer,
            augment(xb, plan.augment, generator, labels=yb, flip=flip),  # labels: styles of one digit (data/styles.py)
            yb,
            mean=plan.mean,
            std=plan.std,
            precision=plan.precision,
            channels_last=t.channels_last,
            label_smoothing=t.label_smoothing,
            optimizer_step=optimizer_step,
        )
        if ema is not None:
            ema.update_parameters(unwrap(model))
        loss_sum += loss * yb.shape[0]
        correct += (logits.argmax(1) == yb).sum()
        step_losses[i] = loss
        seen += yb.shape[0]
        step += 1
        if progress is not None:
            progress.advance(yb.shape[0] * info.world_size)
        if steps_log is not None:
            steps_log.row(step, loss, lr, yb.shape[0] * info.world_size)
    totals = dist.all_reduce_sum(
        torch.stack([loss_sum.float(), correct.float(), torch.tensor(float(seen), device=device)]), info
    )
    n = max(totals[2].item(), 1.0)
    row = {"train_loss": totals[0].item() / n, "train_acc": totals[1].item() / n}
    return row, step, step_losses[: step - first_step].cpu()


def compile_for_training(model: nn.Module, data: ImageData, plan: Plan) -> tuple[nn.Module, float]:
    """``torch.compile`` the model and compile it now, before the training clock starts; returns (compiled, seconds).

    Shapes are static (``dynamic=False``: static kernels are the fast ones), so every batch size an epoch
    will see is compiled here: the full batch and the smaller last one. The warm-up runs forward and
    backward on real images, then restores weights, BatchNorm statistics, gradients and the RNG, so the
    training that follows starts from exactly where it would have started without it.
    """
    t, info = plan.train, plan.dist
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
        xb = normalize(xb, plan.mean, plan.std)  # (B, C, H, W) float
        if t.channels_last:
            xb = xb.contiguous(memory_format=torch.channels_last)
        with autocast(xb.device, plan.precision):
            logits = compiled(xb)
        F.cross_entropy(logits.float(), yb).backward()
    model.zero_grad(set_to_none=True)
    model.load_state_dict(state)
    torch.set_rng_state(rng)
    model.train(was_training)
    return cast(nn.Module, compiled), time.perf_counter() - t0


def load_data(cfg: RunConfig) -> ImageData:
    """Load the configured dataset into memory (uint8), with limits and validation split applied."""
    d = cfg.data
    check_folder(d.dataset)
    d.data_dir = resolve_data_dir(d.data_dir)  # absolute in config.json: resume and eval find it from anywhere
    data = load_dataset(d.dataset, d.data_dir, download=d.download, grayscale=d.grayscale, image_size=d.image_size)
    if d.limit_train or d.limit_test:
        data = data.subset(d.limit_train, d.limit_test)
    if d.val_fraction:
        data = data.split_validation(d.val_fraction, seed=cfg.train.seed)
    return data


def make_checkpoint(model: nn.Module, plan: Plan, data: ImageData, *, epoch: int, history: list, metrics: dict) -> dict:
    """The inference part of a checkpoint: enough to rebuild the model and preprocess its input."""
    return {
        "model_name": plan.model_name,
        "model_args": plan.model_args,
        "state_dict": {k: v.detach().cpu() for k, v in unwrap(model).state_dict().items()},
        "dataset": plan.dataset,
        **({"dataset_note": data.note} if data.note else {}),  # "JPEG q75 copy": predict and serve say so
        "task": task_of(data),
        "classes": list(data.classes),
        "channels": data.channels,
        "image_size": data.image_size,
        "mean": list(plan.mean),
        "std": list(plan.std),
        "config": plan.config.to_dict(),
        "epoch": epoch,
        "history": history,
        "metrics": metrics,
    }


def _rng_state(generator: torch.Generator) -> dict:
    state: dict = {"generator": generator.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict, generator: torch.Generator) -> None:
    generator.set_state(state["generator"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _check_resume_fits(resume: dict, plan: Plan, data: ImageData) -> None:
    """A resume continues the same model on the same classes (an image folder can gain or lose some)."""
    if resume["model_name"] != plan.model_name:
        raise DigitlabError(f"cannot resume: checkpoint holds {resume['model_name']!r}, not {plan.model_name!r}")
    check_compatible(resume, data.channels, data.image_size, data.num_classes, plan.dataset)
    if list(resume["classes"]) != list(data.classes):
        raise DigitlabError(
            f"cannot resume: {plan.dataset} now has classes {data.classes}, the run was trained on {resume['classes']}"
        )


def train(
    cfg: RunConfig | Plan,
    data: ImageData | None = None,
    *,
    resume: dict | None = None,
    quiet: bool = False,
    console=None,
) -> TrainResult:
    """Run a whole training: resolve the plan, build the model, loop over epochs, then finish the run.

    Args:
        cfg: the run configuration (resolved here), or a ``Plan`` already resolved for ``data``.
        data: an already loaded dataset (tests, bench); None loads ``cfg.data``. Required with a plan.
        resume: a ``last.pt`` checkpoint dict to continue from (its run directory is reused).
        quiet: no progress bars or per-epoch lines.
    """
    if isinstance(cfg, Plan):
        if data is None:
            raise ValueError("train(plan, data): a plan was resolved for its data, so pass them")
        plan = cfg
    else:
        check_config(cfg)  # before loading anything: a bad number is a usage error, not a traceback
        if cfg.train.threads:
            torch.set_num_threads(cfg.train.threads)
        if data is None:
            data = load_data(cfg)
        plan = resolve(cfg, data)
    t, info = plan.train, plan.dist
    dist.set_threads(info, t.threads)  # --threads, or under torchrun the cores shared by the ranks
    device = dist.setup(info, plan.device)
    if device.type == "cpu":
        keep_freed_memory()  # the step's buffers are reused, not faulted in again every step
    data = data.to(device)
    if resume is not None:
        _check_resume_fits(resume, plan, data)
    torch.manual_seed(t.seed + info.rank)
    generator = torch.Generator().manual_seed(t.seed)  # shuffling and augmentation; same on every rank
    model = create_model(plan.model_name, **plan.model_args).to(device)
    init_from_data = getattr(model, "init_from_data", None)
    if resume is None and callable(init_from_data):  # airbench's whitening stem: filters from the data's patches
        init_from_data(normalize(data.train_x[:DATA_INIT_IMAGES], plan.mean, plan.std))
    if t.channels_last:
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # not in torch's type stubs
    optimizer = build_optimizer(model, t, world_size=info.world_size)
    ema = None
    if t.ema:
        ema = torch.optim.swa_utils.AveragedModel(
            model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(0.999), use_buffers=True
        )

    history: list[dict] = []
    step_losses: list[torch.Tensor] = []
    start_epoch, best_acc, best_epoch = 0, -1.0, 0
    if resume is not None:
        unwrap(model).load_state_dict(resume["state_dict"] if ema is None else resume["raw_state_dict"])
        optimizer.load_state_dict(resume["optimizer"])
        if ema is not None:
            ema.load_state_dict(resume["ema"])
        _set_rng_state(resume["rng"], generator)
        start_epoch, history = resume["epoch"], list(resume["history"])
        step_losses = [resume["step_losses"]] if "step_losses" in resume else []
        evaluated = [h for h in history if h.get("test_acc") is not None]
        if evaluated:
            best = max(evaluated, key=lambda h: h["test_acc"])  # the first of equals, as the loop keeps it
            best_acc, best_epoch = best["test_acc"], best["epoch"]

    if t.tensorboard:
        check_tensorboard()  # before the run directory: a missing package is a usage error
    run_dir = run_dir_of(plan.config)
    claim = claim_run_dir(run_dir, resuming=resume is not None) if info.is_main else None
    train_model, steps_log = model, None
    try:
        if info.is_main:
            write_config(run_dir, plan.config)
        compile_seconds = 0.0
        if t.compile:  # before the clock: compile time is reported on its own (compile_time in metrics.csv)
            train_model, compile_seconds = compile_for_training(model, data, plan)
        # Compiled at its first call, inside the clock (seconds the first time in a process, less after).
        optimizer_step = compiled_step(optimizer) if t.compile_step else optimizer.step
        if info.enabled:
            train_model = nn.parallel.DistributedDataParallel(train_model)
        eval_model = ema.module if ema is not None else model

        step = start_epoch * plan.steps_per_epoch
        printer = EpochPrinter(data.train_x.shape[0], quiet or not info.is_main, console)
        if info.is_main and (t.log_every or t.tensorboard):
            steps_log = StepLog.open(
                run_dir,
                t.log_every,
                plan.steps_per_epoch,
                step,
                tensorboard=t.tensorboard,
                console=printer.console,
                quiet=quiet,
            )
        elapsed = history[-1]["elapsed"] if history else 0.0
        clock0, elapsed0 = time.perf_counter(), elapsed  # the honest clock: saving between epochs counts too
        for epoch in range(start_epoch + 1, t.epochs + 1):
            t0 = time.perf_counter()
            with printer.epoch(epoch, t.epochs) as progress:
                row, step, losses = train_one_epoch(
                    train_model,
                    optimizer,
                    data,
                    plan,
                    step=step,
                    generator=generator,
                    ema=ema,
                    progress=progress,
                    optimizer_step=optimizer_step,
                    steps_log=steps_log,
                )
            step_losses.append(losses)
            t1 = time.perf_counter()
            do_eval = epoch == t.epochs or epoch % max(t.eval_every, 1) == 0
            if do_eval:  # in the training precision: part of the timed loop (the reported one is fp32)
                ev = evaluate(
                    eval_model,
                    data.test_x,
                    data.test_y,
                    plan.mean,
                    plan.std,
                    precision=plan.precision,
                    tta=plan.tta and epoch == t.epochs,
                    channels_last=t.channels_last,
                )
            t2 = time.perf_counter()
            elapsed = elapsed0 + (t2 - clock0)
            row = {
                "epoch": epoch,
                "lr": float(optimizer.param_groups[0]["lr"]),
                **row,
                "test_loss": ev.loss if do_eval else None,
                "test_acc": ev.accuracy if do_eval else None,
                "train_time": t1 - t0,
                "eval_time": t2 - t1,
                "elapsed": elapsed,
                "compile_time": compile_seconds if epoch == start_epoch + 1 else 0.0,
                "step": step,
            }
            history.append(row)
            printer.row(row)
            if steps_log is not None:
                steps_log.epoch(row)
            if info.is_main:
                ckpt = make_checkpoint(
                    eval_model,
                    plan,
                    data,
                    epoch=epoch,
                    history=history,
                    metrics={"test_acc": row["test_acc"], "test_loss": row["test_loss"]},
                )
                if do_eval and row["test_acc"] > best_acc:
                    best_acc, best_epoch = row["test_acc"], epoch
                    save_checkpoint(run_dir / "best.pt", ckpt)
                resume_state = _resume_state(optimizer, generator, ema, model, step_losses)
                save_checkpoint(run_dir / "last.pt", ckpt | resume_state)  # written last: it marks the epoch as done
                write_metrics_csv(run_dir / "metrics.csv", history)
            if t.dry_run:
                break

        result = TrainResult(run_dir, history=history, best_acc=best_acc)
        result.train_seconds = history[-1]["elapsed"] if history else 0.0
        result.compile_seconds = sum(h.get("compile_time", 0.0) for h in history)
        finished = bool(history) and history[-1]["epoch"] == t.epochs
        result.tta = plan.tta and finished
        if steps_log is not None:
            steps_log.close()
        if info.is_main and history:
            last = make_checkpoint(eval_model, plan, data, epoch=history[-1]["epoch"], history=history, metrics={})
            resume_state = _resume_state(optimizer, generator, ema, model, step_losses)
            result.metrics = finish_run(
                run_dir,
                plan,
                data,
                eval_model,
                last,
                resume_state,
                finished=finished,
                best_epoch=best_epoch,
                console=printer.console,
                quiet=quiet,
            )
            result.final_acc = result.metrics["accuracy"]
        else:
            result.final_acc = history[-1]["test_acc"] if history else float("nan")
    finally:
        if steps_log is not None:
            steps_log.close()
        if claim is not None:
            claim.release()
        del train_model  # the DDP wrapper holds the process group: free it before the group is shut down
        dist.teardown(info)
    return result


def _resume_state(optimizer, generator, ema, model, step_losses: list[torch.Tensor]) -> dict:
    """What last.pt holds beyond the inference checkpoint: enough to continue bit for bit."""
    state = {
        "optimizer": optimizer.state_dict(),
        "rng": _rng_state(generator),
        "step_losses": torch.cat(step_losses) if step_losses else torch.zeros(0),
        "finished": False,
    }
    if ema is not None:
        state |= {
            "ema": ema.state_dict(),
            "raw_state_dict": {k: v.cpu() for k, v in unwrap(model).state_dict().items()},
        }
    return state
