"""``fast-cifar-cpu``: airbench's CIFAR-10 net, narrowed for a few CPU cores.

airbench94 (Keller Jordan) spends ~110M multiply-adds per image, most of them in its 256-channel
second and third blocks; a GPU hides that, two CPU cores do not. This net keeps airbench's shape
(2x2 stem, three conv-pool-BN-GELU-conv-BN-GELU blocks, global max pool, a fixed 1/9 logit scale
that lets a plain schedule work) and its recipe (``--preset cifar-fast-cpu``: label smoothing,
one-cycle Nesterov SGD, crop+flip, flip test-time augmentation, channels_last and bf16 where the
CPU computes it), with widths that grow as the resolution shrinks: 32, 64, 128 by default, about
20M multiply-adds per image. The training loop, the data path and the model code are the same on
a GPU (``--device cuda``); only the widths and the batch are the CPU's.
"""

from __future__ import annotations

from torch import nn

from digitlab.models.layers import Mul, cifar_block, require_min_size
from digitlab.models.registry import register_model

STEM = 24  # airbench's 2x2 stem width


@register_model(
    "fast-cifar-cpu", "airbench-style CIFAR-10 net for CPUs (widths 32/64/128, ~20M mult-adds, ~0.3M params)"
)
def fast_cifar_cpu(*, num_classes: int = 10, in_channels: int = 3, image_size: int = 32, width: int = 32) -> nn.Module:
    require_min_size("fast-cifar-cpu", image_size, 9)  # 2x2 stem, then three 2x2 pools
    w1, w2, w3 = width, 2 * width, 4 * width
    return nn.Sequential(
        nn.Conv2d(in_channels, STEM, 2, padding=0, bias=True),  # (B, 24, H-1, W-1)
        nn.GELU(),
        *cifar_block(STEM, w1),  # (B, w1, 15, 15) at 32 px
        *cifar_block(w1, w2),  # (B, w2, 7, 7)
        *cifar_block(w2, w3),  # (B, w3, 3, 3)
        nn.AdaptiveMaxPool2d(1),
        nn.Flatten(),
        nn.Linear(w3, num_classes, bias=False),
        Mul(1 / 9),
    )
