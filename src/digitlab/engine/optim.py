"""Optimizers, the learning-rate schedule as a plain function of the step, and model arguments."""

from __future__ import annotations

import inspect
import logging
import math
from collections.abc import Callable

import torch
from torch import nn

from digitlab.config import ModelConfig, TrainConfig
from digitlab.data.base import ImageData
from digitlab.errors import DigitlabError, unknown_name
from digitlab.models import model_info

OPTIMIZERS = ("sgd", "adam", "adamw", "adadelta", "muon")
SCHEDULES = ("none", "step", "cosine", "onecycle")


def build_optimizer(model: nn.Module, t: TrainConfig, *, world_size: int = 1) -> torch.optim.Optimizer:
    """The optimizer by name. Weight decay skips biases and norm weights (1-D tensors), as is standard.

    ``world_size`` ranks of ``t.batch_size`` make the global batch that ``muon``'s SGD rates scale with.
    """
    if t.optimizer not in OPTIMIZERS:
        raise unknown_name("optimizer", t.optimizer, list(OPTIMIZERS))
    if t.schedule not in SCHEDULES:
        raise unknown_name("schedule", t.schedule, list(SCHEDULES))
    if t.optimizer == "muon":
        return _muon(model, t, t.batch_size * world_size)
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": t.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if t.optimizer == "sgd":
        nesterov = t.nesterov and t.momentum > 0  # torch refuses nesterov without momentum
        return torch.optim.SGD(groups, lr=t.lr, momentum=t.momentum, nesterov=nesterov)
    if t.optimizer == "adam":
        return torch.optim.Adam(groups, lr=t.lr)
    if t.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=t.lr)
    return torch.optim.Adadelta(groups, lr=t.lr)


# airbench94_muon's SGD side, per example (its loss is a sum over the batch, ours a mean) and relative
# to Muon's learning rate (0.24 there): biases 0.053, the head 0.67, momentum 0.85; its weight decay is
# 2e-6 per example of the batch, decoupled: every SGD group shrinks by the same fraction per step.
MUON_SGD_MOMENTUM = 0.85
MUON_BIAS_LR = 0.053 / 0.24
MUON_HEAD_LR = 0.67 / 0.24


def _muon(model: nn.Module, t: TrainConfig, batch: int) -> torch.optim.Optimizer:
    """Muon for the conv filters (4-D), Nesterov SGD for biases, norms and linear layers (engine/muon.py).

    The SGD groups' learning rates are ``lr`` times airbench's ratio times the global ``batch``;
    ``weight_decay`` is per example: each group's L2 coefficient makes its shrink per step
    ``lr * weight_decay * batch`` at any learning rate of the schedule's peak.
    """
    from digitlab.engine.muon import Muon

    trainable = [p for p in model.parameters() if p.requires_grad]
    filters = [p for p in trainable if p.ndim == 4]
    if not filters:
        raise DigitlabError("--optimizer muon trains convolution filters; this model has none (use sgd or adam)")
    windows = dict(getattr(model, "learning_windows", list)())  # {parameter: fraction of training}
    biases = [p for p in trainable if p.ndim <= 1 and p not in windows]
    dense = [p for p in trainable if p.ndim in (2, 3) or p.ndim > 4]
    groups: list[dict] = [{"params": filters, "muon": True, "lr_scale": 1.0}]
    sgd = [(biases, MUON_BIAS_LR, 1.0), (dense, MUON_HEAD_LR, 1.0)]
    sgd += [([p], MUON_BIAS_LR, until) for p, until in windows.items() if p.requires_grad]
    for params, ratio, until in sgd:
        if params:
            # lr * (ratio * batch) * weight_decay / ratio: the shrink per step is lr * weight_decay * batch
            decay = t.weight_decay / ratio
            group = {"params": params, "lr_scale": ratio * batch, "momentum": MUON_SGD_MOMENTUM, "weight_decay": decay}
            groups.append(group | ({"lr_until": until} if until < 1 else {}))
    return Muon(groups, lr=t.lr, momentum=t.momentum)


def set_lr(optimizer: torch.optim.Optimizer, step: int, total_steps: int, t: TrainConfig) -> float:
    """Set every group's learning rate for ``step``; returns the schedule's rate (``lr_at``).

    A group's rate is the schedule's times its ``lr_scale`` (Muon's SGD groups have one); a group with
    ``lr_until`` runs the whole schedule within that first fraction of the steps and is 0 after it
    (airbench's stem bias). In place where the rate is a tensor (``compiled_step`` made it one).
    """
    lr = lr_at(step, total_steps, t)
    for group in optimizer.param_groups:
        until = group.get("lr_until", 1.0)
        horizon = max(round(total_steps * until), 1)
        window = lr if until == 1.0 else (lr_at(step, horizon, t) if step < horizon else 0.0)
        value = window * group.get("lr_scale", 1.0)
        if isinstance(group["lr"], torch.Tensor):
            group["lr"].fill_(value)
        else:
            group["lr"] = value
    return lr


class _NoProfilerNote(logging.Filter):
    """Drops dynamo's one-time note that ``Optimizer.step``'s profiler label is left out of the compiled
    graph: true, harmless, and nothing a user of ``digitlab train`` can act on."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Profiler record function" not in record.getMessage()


_NO_PROFILER_NOTE = _NoProfilerNote()


def compiled_step(optimizer: torch.optim.Optimizer) -> Callable[[], None]:
    """``optimizer.step`` under ``torch.compile`` (static shapes); compiled at its first call.

    Worth it where the step is many small unfused ops: Adadelta on CPU (5 ops per parameter, no fused
    or foreach kernel) is a large share of seed 000's step, and compiling it shortens the step (BENCHMARKS.md).
    The learning rates become 0-d tensors, so a schedule that changes them does not recompile.
    """
    for group in optimizer.param_groups:
        if not isinstance(group["lr"], torch.Tensor):
            group["lr"] = torch.tensor(float(group["lr"]))
    logging.getLogger("torch._dynamo.variables.ctx_manager").addFilter(_NO_PROFILER_NOTE)  # once: same object
    return torch.compile(optimizer.step, dynamic=False)


def lr_at(step: int, total_steps: int, t: TrainConfig) -> float:
    """Learning rate at a global step. A pure function, so resuming needs no scheduler state.

    none: constant. step: times gamma after each epoch (seed 000's StepLR). cosine: cosine to 0.
    onecycle: linear warm-up over ``warmup`` of the steps from lr/10, then linear decay to 0.
    """
    if t.schedule == "none" or total_steps <= 0:
        return t.lr
    frac = step / total_steps
    if t.schedule == "step":
        steps_per_epoch = max(total_steps // max(t.epochs, 1), 1)
        return t.lr * t.gamma ** (step // steps_per_epoch)
    if t.schedule == "cosine":
        return t.lr * 0.5 * (1 + math.cos(math.pi * frac))
    if t.schedule == "onecycle":
        if frac < t.warmup:
            return t.lr * (0.1 + 0.9 * frac / t.warmup)
        return t.lr * max(0.0, (1 - frac) / (1 - t.warmup))
    raise unknown_name("schedule", t.schedule, list(SCHEDULES))


def model_kwargs(m: ModelConfig, data: ImageData) -> dict:
    """Constructor arguments from the dataset's shape, plus the width knob where the model has one."""
    info = model_info(m.model)  # an unknown name or an unusable import path fails here, before any work
    kw = {"num_classes": data.num_classes, "in_channels": data.channels, "image_size": data.image_size}
    if m.width is not None:
        params = inspect.signature(info.fn).parameters
        knob = next((n for n in ("width", "hidden", "n_feature") if n in params), None)
        if knob is None:
            raise DigitlabError(f"model {m.model!r} has no width setting; drop --width")
        kw[knob] = m.width
    return kw
