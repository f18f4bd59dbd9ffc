"""The seeds' small convolutional nets (seeds 000, 001, 002 and 004).

Each class is the seed's code with three changes: the input channels, image size and
number of classes are arguments; the first linear layer's input size is measured with a
dummy forward pass instead of being hard-coded (pytorch/examples' magic 9216); and the
final ``log_softmax`` is gone, because training uses ``cross_entropy`` on logits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from digitlab.models.layers import ByteDropout, flat_size, pool_before_relu, require_min_size
from digitlab.models.registry import register_model


class SmallCNN(nn.Module):
    """Seed 002's ``CNN``: two 5x5 convolutions with ``n_feature`` maps, max pooling, fc50.

    Its parameter count (6,422 at n_feature=6 on MNIST) is chosen to match the seed's
    ``FC2Layer`` (6,442 at n_hidden=8), so the shuffled-pixel experiment compares
    architectures, not sizes.
    """

    def __init__(self, num_classes: int, in_channels: int, image_size: int, n_feature: int):
        super().__init__()
        self.pool_first = True  # max pool, then ReLU: the seed's values and gradients, cheaper (pool_before_relu)
        self.conv1 = nn.Conv2d(in_channels, n_feature, kernel_size=5)
        self.conv2 = nn.Conv2d(n_feature, n_feature, kernel_size=5)
        self.fc1 = nn.Linear(flat_size(self._features, in_channels, image_size), 50)
        self.fc2 = nn.Linear(50, num_classes)

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        if self.pool_first:
            x = F.relu(F.max_pool2d(self.conv1(x), kernel_size=2))  # (B, n, 12, 12) at 28
            return F.relu(F.max_pool2d(self.conv2(x), kernel_size=2))  # (B, n, 4, 4)
        x = F.max_pool2d(F.relu(self.conv1(x)), kernel_size=2)  # the seed's order
        return F.max_pool2d(F.relu(self.conv2(x)), kernel_size=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self._features(x), 1)
        return self.fc2(F.relu(self.fc1(x)))


class ExamplesNet(nn.Module):
    """Seed 000's ``Net``, the pytorch/examples MNIST model: conv32, conv64, max pool, dropout .25/.5, fc128."""

    def __init__(self, num_classes: int, in_channels: int, image_size: int, dropout1: float, dropout2: float):
        super().__init__()
        self.features = pool_before_relu(
            nn.Sequential(
                nn.Conv2d(in_channels, 32, 3, 1),
                nn.ReLU(),
                nn.Conv2d(32, 64, 3, 1),
                nn.ReLU(),
                nn.MaxPool2d(2),  # (B, 64, 12, 12) at 28: the 9216 of the original
                ByteDropout(dropout1),
            )
        )
        self.classifier = nn.Sequential(
            nn.Flatten(1),
            nn.Linear(flat_size(self.features, in_channels, image_size), 128),
            nn.ReLU(),
            ByteDropout(dropout2),
            nn.Linear(128, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class KerasStyleCNN(nn.Module):
    """Seed 001's ``Model``: two conv3x3 + max-pool blocks (32, 64 maps), fc64 (1,600 inputs at 28)."""

    def __init__(self, num_classes: int, in_channels: int, image_size: int):
        super().__init__()
        self.features = pool_before_relu(
            nn.Sequential(
                nn.Conv2d(in_channels, 32, kernel_size=3),
                nn.ReLU(),
                nn.MaxPool2d(2),
                nn.Conv2d(32, 64, kernel_size=3),
                nn.ReLU(),
                nn.MaxPool2d(2),  # (B, 64, 5, 5) at 28
            )
        )
        self.classifier = nn.Sequential(
            nn.Flatten(1),
            nn.Linear(flat_size(self.features, in_channels, image_size), 64),
            nn.ReLU(),
            nn.Linear(64, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class Net004(nn.Module):
    """Seed 004's ``MyNetwork``: conv5x5(16) + pool, conv3x3(64) + pool, dropout, one linear layer.

    The seed's comments say 28 -> 24 -> 14 -> 12 -> 6, but 24 // 2 is 12, so the real sizes
    are 24 -> 12 -> 10 -> 5 and the linear layer has 64*5*5 inputs (25,706 parameters, as
    the seed's own ``_size`` formula gives).
    """

    def __init__(self, num_classes: int, in_channels: int, image_size: int, dropout: float):
        super().__init__()
        self.convpooling = pool_before_relu(
            nn.Sequential(
                nn.Conv2d(in_channels, 16, 5),
                nn.ReLU(),
                nn.MaxPool2d(2),
                nn.Conv2d(16, 64, 3),
                nn.ReLU(),
                nn.MaxPool2d(2),  # (B, 64, 5, 5) at 28
            )
        )
        self.fc = nn.Sequential(
            nn.Flatten(1),
            ByteDropout(dropout),
            nn.Linear(flat_size(self.convpooling, in_channels, image_size), num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.convpooling(x))


class CifarNet(nn.Module):
    """Seed 002's CIFAR-10 ``Net`` (the PyTorch 60-minute blitz model): conv6, conv16, fc120, fc84."""

    def __init__(self, num_classes: int, in_channels: int, image_size: int):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 6, 5),
            nn.ReLU(),
            nn.MaxPool2d(2, 2),
            nn.Conv2d(6, 16, 5),
            nn.ReLU(),
            nn.MaxPool2d(2, 2),  # (B, 16, 5, 5) at 32
        )
        self.classifier = nn.Sequential(
            nn.Flatten(1),
            nn.Linear(flat_size(self.features, in_channels, image_size), 120),
            nn.ReLU(),
            nn.Linear(120, 84),
            nn.ReLU(),
            nn.Linear(84, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


@register_model("cnn-small", "seed 002 (FC vs CNN, shuffled pixels): 2-conv CNN as small as the 8-unit mlp", seed="002")
def cnn_small(*, num_classes: int = 10, in_channels: int = 1, image_size: int = 28, n_feature: int = 6) -> nn.Module:
    require_min_size("cnn-small", image_size, 16)  # 5x5 conv, pool, 5x5 conv, pool
    return SmallCNN(num_classes, in_channels, image_size, n_feature)


@register_model(
    "cnn",
    "seed 000 (MNIST CNN tutorial): pytorch/examples' Net (conv32, conv64, dropout, fc128)",
    seed="000",
    seed_keys={"features.0": "conv1", "features.2": "conv2", "classifier.1": "fc1", "classifier.4": "fc2"},
)
def cnn(
    *,
    num_classes: int = 10,
    in_channels: int = 1,
    image_size: int = 28,
    dropout1: float = 0.25,  # after the convolutions, as in pytorch/examples
    dropout2: float = 0.5,  # before the last layer
) -> nn.Module:
    require_min_size("cnn", image_size, 6)  # two 3x3 convs, one 2x2 pool
    return ExamplesNet(num_classes, in_channels, image_size, dropout1, dropout2)


@register_model(
    "cnn-k",
    "seed 001 (365-day camp MNIST tutorial): two conv+pool blocks and fc64",
    seed="001",
    seed_keys={"features.0": "conv1", "features.3": "conv2", "classifier.1": "fc1", "classifier.3": "fc2"},
)
def cnn_k(*, num_classes: int = 10, in_channels: int = 1, image_size: int = 28) -> nn.Module:
    require_min_size("cnn-k", image_size, 10)  # 3x3 conv, pool, 3x3 conv, pool
    return KerasStyleCNN(num_classes, in_channels, image_size)


@register_model(
    "cnn-004", "seed 004 (write your own network): MyNetwork, conv16 + conv64, dropout, one linear", seed="004"
)
def cnn_004(
    *,
    num_classes: int = 10,
    in_channels: int = 1,
    image_size: int = 28,
    dropout: float = 0.5,  # nn.Dropout()'s default, as in the seed
) -> nn.Module:
    require_min_size("cnn-004", image_size, 12)  # 5x5 conv, pool, 3x3 conv, pool
    return Net004(num_classes, in_channels, image_size, dropout)


@register_model(
    "cifar-net",
    "seed 002 (CIFAR-10 part): the PyTorch 60-minute blitz Net (conv6, conv16, fc120, fc84)",
    seed="002",
    seed_keys={
        "features.0": "conv1",
        "features.3": "conv2",
        "classifier.1": "fc1",
        "classifier.3": "fc2",
        "classifier.5": "fc3",
    },
)
def cifar_net(*, num_classes: int = 10, in_channels: int = 3, image_size: int = 32) -> nn.Module:
    require_min_size("cifar-net", image_size, 16)  # 5x5 conv, pool, 5x5 conv, pool
    return CifarNet(num_classes, in_channels, image_size)
