"""Seed 002's VGG for CIFAR-10: a cfg list of 3x3 conv + BatchNorm + ReLU blocks and max pools."""

from __future__ import annotations

import torch
from torch import nn

from digitlab.models.layers import flat_size, pool_before_relu, require_min_size
from digitlab.models.registry import register_model

# Seed 002's cfg (VGG-11): numbers are 3x3 conv widths, "M" a 2x2 max pool.
VGG11: list[int | str] = [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"]


class VGG(nn.Module):
    """Seed 002's ``VGG``: ``features`` from the cfg list, then one linear layer.

    Five poolings take CIFAR's 32x32 to 1x1, so the classifier sees 512 features
    (9,231,114 parameters). One change from the seed: the poolings use ``ceil_mode``, which
    is identical at 32x32 and lets 28x28 MNIST (28 -> 14 -> 7 -> 4 -> 2 -> 1) and smaller
    images through instead of pooling a 1x1 map down to nothing. Each max pool runs before the
    ReLU it follows (``pool_before_relu``: the same values and gradients, the ReLU on 4x fewer
    pixels); ``as_the_seed_wrote_it`` puts the seed's order back.
    """

    def __init__(self, num_classes: int, in_channels: int, image_size: int, cfg: list[int | str]):
        super().__init__()
        self.features = pool_before_relu(self._make_layers(cfg, in_channels))
        self.classifier = nn.Linear(flat_size(self.features, in_channels, image_size), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.features(x)  # (B, 512, 1, 1) at 32
        return self.classifier(out.flatten(1))

    @staticmethod
    def _make_layers(cfg: list[int | str], in_channels: int) -> nn.Sequential:
        layers: list[nn.Module] = []
        for x in cfg:
            if x == "M":
                layers += [nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=True)]
            else:
                # padding=1 keeps the size: (N + 2 - 3) / 1 + 1 = N
                layers += [
                    nn.Conv2d(in_channels, int(x), kernel_size=3, padding=1),
                    nn.BatchNorm2d(int(x)),
                    nn.ReLU(inplace=True),
                ]
                in_channels = int(x)
        layers += [nn.AvgPool2d(kernel_size=1, stride=1)]  # a no-op kept from the seed (and its summary)
        return nn.Sequential(*layers)


@register_model("vgg", "seed 002 (CIFAR-10 part): VGG-11 with BatchNorm (9.2M parameters)", seed="002")
def vgg(*, num_classes: int = 10, in_channels: int = 3, image_size: int = 32) -> nn.Module:
    require_min_size("vgg", image_size, 1)
    return VGG(num_classes, in_channels, image_size, VGG11)
