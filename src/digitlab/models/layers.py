"""Layers and helpers shared by the model files, so no model file imports another.

The seeds' networks keep their values and gradients but run two of their layers faster:
``ByteDropout`` (nn.Dropout's distribution from one random byte per element) and
``pool_before_relu`` (max pool before the ReLU it follows). ``as_the_seed_wrote_it`` undoes
both, for the bench's seed-style reference and for ``digitlab summary --as-written``. ``Mul`` is
airbench's fixed logit scale.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from digitlab.errors import DigitlabError


def require_min_size(model: str, image_size: int, minimum: int) -> None:
    """Raise a DigitlabError when the convolutions and poolings would shrink the image to nothing."""
    if image_size < minimum:
        raise DigitlabError(
            f"model {model!r} needs images of at least {minimum}x{minimum} pixels, got {image_size}x{image_size}; "
            "choose another model (e.g. mlp) or a larger --image-size"
        )


@torch.no_grad()
def flat_size(features: Callable[[torch.Tensor], torch.Tensor], in_channels: int, image_size: int) -> int:
    """Number of features after ``features`` and flatten, measured on one dummy image.

    This replaces pytorch/examples' hard-coded 9216, so every model takes any input size.
    """
    module = features if isinstance(features, nn.Module) else None
    if module is not None:
        module.eval()  # BatchNorm must not update its running statistics on the dummy
    out = features(torch.zeros(1, in_channels, image_size, image_size))
    if module is not None:
        module.train()
    return out.flatten(1).shape[1]


def random_bytes_like(x: torch.Tensor) -> torch.Tensor:
    """Uniform random uint8 values in ``x``'s shape, device and (dense) memory layout.

    Drawn as 64-bit words viewed as bytes: 8 bytes per generator call instead of one (several
    times faster on CPU than ``random_(0, 256)`` on uint8; BENCHMARKS.md, training speed), and
    every byte is exactly uniform (the full 64-bit range takes the generator's raw output).
    """
    n = x.numel()
    words = torch.empty((n + 7) // 8, dtype=torch.int64, device=x.device).random_(-(2**63), None)
    flat = words.view(torch.uint8)[:n]
    if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return torch.as_strided(flat, x.shape, x.stride())  # a dense permuted layout: same bytes, x's strides
    return flat.view(x.shape)


class ByteDropout(nn.Dropout):
    """``nn.Dropout`` with a cheaper mask: one random byte per element, kept when it is >= p * 256.

    The same distribution as ``nn.Dropout`` when p is a multiple of 1/256 (the seeds' 0.25 and 0.5);
    any other p is ``nn.Dropout`` itself. ``bernoulli_`` on CPU draws a double per element, which
    costs a visible share of seed 000's training step (BENCHMARKS.md, training speed).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cut = self.p * 256
        if not self.training or self.inplace or cut != int(cut) or not 0 < cut < 256:
            return super().forward(x)
        keep = random_bytes_like(x) >= int(cut)  # x's memory format
        return x * keep.to(x.dtype).mul_(1.0 / (1.0 - self.p))


def _swap_pairs(seq: nn.Sequential, first: type, second: type) -> None:
    """Swap every ``first`` layer directly followed by a ``second`` layer in ``seq`` (in place)."""
    i = 0
    while i < len(seq) - 1:
        if type(seq[i]) is first and type(seq[i + 1]) is second:
            seq[i], seq[i + 1] = seq[i + 1], seq[i]
            i += 1
        i += 1


def pool_before_relu(seq: nn.Sequential) -> nn.Sequential:
    """``seq`` with every ReLU -> MaxPool2d pair run as MaxPool2d -> ReLU (in place; returned).

    Both are monotone, so the outputs and the gradients are the same (a test checks), while the
    ReLU runs on 4x fewer pixels and the pool's backward gets cheaper (BENCHMARKS.md, training
    speed). Both layers have no parameters: state_dict keys do not change.
    ``as_the_seed_wrote_it`` puts the seed's order back.
    """
    _swap_pairs(seq, nn.ReLU, nn.MaxPool2d)
    setattr(seq, "pooled_first", True)  # noqa: B010 (nn.Module attributes are typed as tensors or modules)
    return seq


def as_the_seed_wrote_it(model: nn.Module) -> nn.Module:
    """``model`` with digitlab's speed changes undone (in place; returned), layer for layer as the seed wrote it.

    The name is the point: the seeds (the five tutorials digitlab started from) are the reference, and
    this is their network with the same weights. Every ``ByteDropout`` goes back to ``nn.Dropout``,
    every ReLU back before its max pool (``pool_before_relu``), and a module written with functional
    calls that has a ``pool_first`` flag (``SmallCNN``) gets it cleared. The outputs are the same.
    """
    for m in list(model.modules()):
        if isinstance(m, nn.Sequential) and getattr(m, "pooled_first", False):
            _swap_pairs(m, nn.MaxPool2d, nn.ReLU)
            setattr(m, "pooled_first", False)  # noqa: B010
        if getattr(m, "pool_first", None) is True:
            setattr(m, "pool_first", False)  # noqa: B010
    for parent in list(model.modules()):
        for name, child in parent.named_children():
            if isinstance(child, ByteDropout):
                setattr(parent, name, nn.Dropout(child.p, child.inplace))
    return model


class Mul(nn.Module):
    """Scales the logits (airbench: a fixed temperature lets a plain lr schedule work)."""

    def __init__(self, scale: float):
        super().__init__()
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale
