"""airbench's CIFAR-10 net (Keller Jordan's airbench94_muon): ``fast-cifar``, and ``fast-cifar-cpu`` narrowed.

A 2x2 "whitening" stem whose filters are the training patches' principal components (computed from
the data by ``init_from_data``, then frozen), three conv-pool-BN-GELU-conv-BN-GELU blocks, a global
max pool and a linear head. The other choices that make it train in a few epochs: BatchNorm with
frozen scales, eps 1e-12 and fast-moving statistics; identity (Dirac) initialisation of every conv's
first filters; a head with unit-std weights divided by its width. ``fast-cifar`` has airbench's
widths (64, 256, 256: ~118M multiply-adds per image); ``fast-cifar-cpu`` grows more slowly (32, 64,
128: ~20M), for a few CPU cores. Same code on a CPU and a GPU; ``--preset cifar-fast`` and
``cifar-fast-cpu`` are their recipes (engine/presets.py, BENCHMARKS.md).
"""

from __future__ import annotations

from typing import cast

import torch
from torch import nn

from digitlab.models.layers import Mul, require_min_size
from digitlab.models.registry import register_model

STEM_KERNEL = 2
STEM = 2 * 3 * STEM_KERNEL**2  # 24: each principal component of a 2x2 RGB patch, and its negative
BN_MOMENTUM = 0.4  # torch's convention (airbench's 0.6 is the old statistics' weight)
WHITENING_EPS = 5e-4
STEM_BIAS_LEARNS = 3 / 8  # airbench: the stem's bias learns over the first 3 of 8 epochs, its rate falling to 0


class DiracConv(nn.Conv2d):
    """3x3 conv without bias whose first ``in_channels`` filters start as the identity (an implicit residual)."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__(c_in, c_out, 3, padding=1, bias=False)

    def reset_parameters(self) -> None:
        super().reset_parameters()
        with torch.no_grad():
            nn.init.dirac_(self.weight[: min(self.in_channels, self.out_channels)])


def frozen_scale_bn(channels: int) -> nn.BatchNorm2d:
    """BatchNorm whose scale stays 1 (not trained): only its shift learns, as in airbench."""
    bn = nn.BatchNorm2d(channels, eps=1e-12, momentum=BN_MOMENTUM)
    bn.weight.requires_grad_(False)
    return bn


def cifar_block(c_in: int, c_out: int) -> list[nn.Module]:
    """conv, max pool, BN, GELU, conv, BN, GELU: the pool comes early, so BN and GELU see 4x fewer pixels."""
    return [
        DiracConv(c_in, c_out),
        nn.MaxPool2d(2),
        frozen_scale_bn(c_out),
        nn.GELU(),
        DiracConv(c_out, c_out),
        frozen_scale_bn(c_out),
        nn.GELU(),
    ]


class AirbenchNet(nn.Sequential):
    """The layers as one ``nn.Sequential`` (flat state_dict keys), plus the whitening initialisation."""

    def __init__(self, widths: tuple[int, int, int], num_classes: int, in_channels: int, logit_scale: float | None):
        w1, w2, w3 = widths
        stem = nn.Conv2d(in_channels, STEM // 3 * in_channels, STEM_KERNEL, padding=0, bias=True)
        stem.weight.requires_grad_(False)  # set from the data by init_from_data
        head = nn.Linear(w3, num_classes, bias=False)
        with torch.no_grad():
            head.weight.div_(head.weight.std())
        super().__init__(
            stem,  # (B, 24, H-1, W-1)
            nn.GELU(),
            *cifar_block(stem.out_channels, w1),  # (B, w1, 15, 15) at 32 px
            *cifar_block(w1, w2),  # (B, w2, 7, 7)
            *cifar_block(w2, w3),  # (B, w3, 3, 3)
            nn.AdaptiveMaxPool2d(1),
            nn.Flatten(),
            head,
            Mul(1 / w3 if logit_scale is None else logit_scale),
        )

    def learning_windows(self) -> list[tuple[nn.Parameter, float]]:
        """Parameters that learn only in a first fraction of training (engine/optim.py's ``muon`` groups):
        the stem's bias, as in airbench, which then stays put while the layers after it settle."""
        return [(cast(nn.Parameter, self[0].bias), STEM_BIAS_LEARNS)]

    @torch.no_grad()
    def init_from_data(self, x: torch.Tensor) -> None:
        """Set the stem's filters to the whitening transform of ``x``'s 2x2 patches (normalised float images;
        the training loop passes the first 5,000, as airbench does).

        Each filter is a principal component divided by the root of its variance (plus eps), and its
        negative: after the GELU, both signs of every whitened direction survive.
        """
        stem = cast(nn.Conv2d, self[0])
        x = x.float()
        c, (kh, kw) = x.shape[1], stem.weight.shape[2:]
        patches = x.unfold(2, kh, 1).unfold(3, kw, 1).permute(0, 2, 3, 1, 4, 5).reshape(-1, c * kh * kw)
        cov = patches.T @ patches / patches.shape[0]  # (c*kh*kw, c*kh*kw)
        eigenvalues, eigenvectors = torch.linalg.eigh(cov.double())
        filters = (eigenvectors.T / torch.sqrt(eigenvalues.clamp_min(0) + WHITENING_EPS).unsqueeze(1)).float()
        filters = filters.reshape(-1, c, kh, kw).flip(0)  # the largest component first
        stem.weight.copy_(torch.cat([filters, -filters]).to(stem.weight.dtype))


def _airbench(
    name: str,
    widths: tuple[int, int, int],
    num_classes: int,
    in_channels: int,
    image_size: int,
    logit_scale: float | None,
) -> nn.Module:
    require_min_size(name, image_size, 9)  # 2x2 stem, then three 2x2 pools
    return AirbenchNet(widths, num_classes, in_channels, logit_scale)


@register_model("fast-cifar", "airbench's CIFAR-10 net (widths 64/256/256, ~118M mult-adds, ~1.97M params)")
def fast_cifar(
    *,
    num_classes: int = 10,
    in_channels: int = 3,
    image_size: int = 32,
    width: int = 64,
    logit_scale: float | None = None,
) -> nn.Module:
    return _airbench("fast-cifar", (width, 4 * width, 4 * width), num_classes, in_channels, image_size, logit_scale)


@register_model("fast-cifar-cpu", "airbench's net for CPUs (widths 32/64/128, ~20M mult-adds, ~0.30M params)")
def fast_cifar_cpu(
    *,
    num_classes: int = 10,
    in_channels: int = 3,
    image_size: int = 32,
    width: int = 32,
    logit_scale: float | None = None,
) -> nn.Module:
    return _airbench("fast-cifar-cpu", (width, 2 * width, 4 * width), num_classes, in_channels, image_size, logit_scale)
