"""Seed 002's fully-connected baseline: the pixels as one flat vector, two hidden layers."""

from __future__ import annotations

import torch
from torch import nn

from digitlab.models.registry import register_model


class MLP(nn.Module):
    """Seed 002's ``FC2Layer``: Linear-ReLU-Linear-ReLU-Linear on the flattened image.

    With ``hidden=8`` on MNIST it has 6,442 parameters, about as many as seed 002's
    6-feature CNN (6,422): the seed pairs the two to show that, at equal size, the
    convolutions win on real images and lose their edge on shuffled pixels
    (``digitlab experiment permuted``). The seed's final ``LogSoftmax`` is dropped: we
    train on logits with ``cross_entropy``.
    """

    def __init__(self, num_classes: int, in_features: int, hidden: int):
        super().__init__()
        self.network = nn.Sequential(
            nn.Flatten(1),  # (B, C, H, W) -> (B, C*H*W), the seed's x.view(-1, input_size)
            nn.Linear(in_features, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x)


def mlp_params(in_features: int, hidden: int, num_classes: int) -> int:
    """Parameter count of ``MLP`` without building it (used to match another model's size)."""
    return (in_features + 1) * hidden + (hidden + 1) * hidden + (hidden + 1) * num_classes


@register_model(
    "mlp",
    "seed 002 (FC vs CNN, shuffled pixels): FC2Layer, 2 hidden layers (width = hidden)",
    seed="002",
    seed_keys={"network.1": "network.0", "network.3": "network.2", "network.5": "network.4"},
)
def mlp(
    *,
    num_classes: int = 10,
    in_channels: int = 1,
    image_size: int = 28,
    hidden: int = 8,  # seed 002's n_hidden: as many parameters as cnn-small
) -> nn.Module:
    return MLP(num_classes, in_channels * image_size * image_size, hidden)
