"""Seed 003's LeNet-5, as in LeCun et al. (1998): sigmoid activations and average pooling."""

from __future__ import annotations

import torch
from torch import nn

from digitlab.models.layers import flat_size, require_min_size
from digitlab.models.registry import register_model


class LeNet5(nn.Module):
    """Seed 003's ``LeNet5``, layer for layer.

    The paper's C1/S2/C3/S4 with sigmoid and 2x2 average pooling; on 28x28 MNIST (not
    the paper's padded 32x32) S4 is 16x4x4, so the first linear layer has 256 inputs
    (44,426 parameters). As in the seed, the three linear layers have no activation
    between them: the nonlinearity lives in the convolutional part only.
    """

    def __init__(self, num_classes: int, in_channels: int, image_size: int):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 6, kernel_size=5, stride=1),
            nn.Sigmoid(),
            nn.AvgPool2d(kernel_size=2, stride=2),
            nn.Conv2d(6, 16, kernel_size=5, stride=1),
            nn.Sigmoid(),
            nn.AvgPool2d(kernel_size=2, stride=2),  # (B, 16, 4, 4) at 28, (B, 16, 5, 5) at 32
        )
        self.classifier = nn.Sequential(
            nn.Linear(flat_size(self.features, in_channels, image_size), 120),
            nn.Linear(120, 84),
            nn.Linear(84, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


@register_model(
    "lenet5", "seed 003 (LeNet-5 tutorial): LeNet-5 as in the 1998 paper (sigmoid, average pooling)", seed="003"
)
def lenet5(*, num_classes: int = 10, in_channels: int = 1, image_size: int = 28) -> nn.Module:
    require_min_size("lenet5", image_size, 16)  # 5x5 conv, pool, 5x5 conv, pool
    return LeNet5(num_classes, in_channels, image_size)
