"""digitlab's fast nets: small BatchNorm conv nets tuned for time to accuracy.

``fast`` is the default MNIST model. On a 2-core CPU the cost of a small conv net is dominated
by memory traffic at full resolution, not by multiply-adds, so its stem is a stride-2 4x4 conv
that goes straight to 14x14 (more images/s than conv + maxpool at 28x28, same one-epoch
accuracy; BENCHMARKS.md). ``fast-wide`` spends more compute for ``--preset best``.
The CIFAR-10 nets are in ``cifar_fast.py``.
"""

from __future__ import annotations

from torch import nn

from digitlab.models.layers import pool_before_relu, require_min_size
from digitlab.models.registry import register_model


def conv_bn(c_in: int, c_out: int, kernel: int = 3, stride: int = 1, padding: int = 1) -> list[nn.Module]:
    # No conv bias: the BatchNorm that follows has its own. BN keeps fp32 statistics under autocast.
    return [
        nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=padding, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    ]


class FastNet(nn.Module):
    """Stride-2 stem, two 3x3 conv stages with one maxpool between, global max pool, linear head.

    ``pool_early`` (the default; checkpoint format 2 and later) pools the second stage's last conv
    before its BatchNorm and ReLU, in airbench's order (conv, pool, BN, ReLU): those two then run
    on 4x fewer pixels, and a bf16 training step of ``fast`` takes less time at the same accuracy
    (BENCHMARKS.md). ``pool_early=False`` is the order of checkpoints below format 2
    (conv, BN, ReLU, pool), run as conv, BN, pool, ReLU: the same outputs (``pool_before_relu``).
    """

    def __init__(self, *, num_classes: int, in_channels: int, width: int, depth: int, pool_early: bool = True):
        super().__init__()
        w1, w2, w3 = width, 2 * width, 4 * width
        layers = conv_bn(in_channels, w1, kernel=4, stride=2, padding=1)  # (B, w1, H/2, W/2)
        c = w1
        for _ in range(depth - 1):
            layers += conv_bn(c, w2)
            c = w2
        if pool_early:
            layers += [
                nn.Conv2d(c, w2, 3, padding=1, bias=False),
                nn.MaxPool2d(2),  # (B, w2, H/4, W/4)
                nn.BatchNorm2d(w2),
                nn.ReLU(inplace=True),
            ]
        else:
            layers += conv_bn(c, w2) + [nn.MaxPool2d(2)]  # (B, w2, H/4, W/4)
        layers += conv_bn(w2, w3)
        for _ in range(depth - 1):
            layers += conv_bn(w3, w3)
        self.features = nn.Sequential(*layers)
        if not pool_early:
            pool_before_relu(self.features)  # parameter-free swap: state_dict keys unchanged
        # Global max pool: works at any input size and costs nothing; max beats mean on digits
        # (a stroke is where it is, not spread over the image).
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.head = nn.Linear(w3, num_classes)

    def forward(self, x):  # x: (B, C, H, W)
        return self.head(self.pool(self.features(x)).flatten(1))  # (B, num_classes)


@register_model(
    "fast", "digitlab's default: 3-conv BatchNorm net with a stride-2 stem (width 16: 99% MNIST in 2 epochs)"
)
def fast(
    *, num_classes: int = 10, in_channels: int = 1, image_size: int = 28, width: int = 16, pool_early: bool = True
) -> nn.Module:
    require_min_size("fast", image_size, 4)  # stride-2 stem and one pool; global pooling takes any larger size
    return FastNet(num_classes=num_classes, in_channels=in_channels, width=width, depth=1, pool_early=pool_early)


@register_model("fast-wide", "deeper/wider fast net for --preset best (5 convs, width 48)")
def fast_wide(
    *, num_classes: int = 10, in_channels: int = 1, image_size: int = 28, width: int = 48, pool_early: bool = True
) -> nn.Module:
    require_min_size("fast-wide", image_size, 4)
    return FastNet(num_classes=num_classes, in_channels=in_channels, width=width, depth=2, pool_early=pool_early)


# Checkpoints of a format below 2 hold these models in the pool-late order (engine/checkpoint.py).
POOL_LATE_BEFORE_FORMAT_2 = ("fast", "fast-wide")
