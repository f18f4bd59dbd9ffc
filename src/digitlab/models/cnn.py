"""The seeds' small convolutional nets, plus the two size helpers every conv model uses.

Each class is the seed's code with three changes: the input channels, image size and
number of classes are arguments; the first linear layer's input size is measured with a
dummy forward pass instead of being hard-coded (pytorch/examples' magic 9216); and the
final ``log_softmax`` is gone, because training uses ``cross_entropy`` on logits.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from digitlab.errors import DigitlabError
from digitlab.models.registry import register_model


def require_min_size(model: str, image_size: int, minimum: int) -> None:
    """Raise a DigitlabError when the convolutions and poolings would shrink the image to nothing."""
    if image_size < minimum:
        raise DigitlabError(
            f"model {model!r} needs images of at least {minimum}x{minimum} pixels, got {image_size}x{image_size}; "
            "choose another model (e.g. mlp) or a larger --image-size"
        )


@torch.no_grad()
def flat_size(features: Callable[[torch.Tensor], torch.Tensor], in_channels: int, image_size: int) -> int:
    """Number of features after ``features`` and flatten, measured on one dummy image."""
    module = features if isinstance(features, nn.Module) else None
    if module is not None:
        module.eval()  # BatchNorm must not update its running statistics on the dummy
    out = features(torch.zeros(1, in_channels, image_size, image_size))
    if module is not None:
        module.train()
    return out.flatten(1).shape[1]


def random_bytes_like(x: torch.Tensor) -> torch.Tensor:
    """Uniform random uint8 values in ``x``'s shape, device and (dense) memory layout.

    Drawn as 64-bit words viewed as bytes: 8 bytes per generator call instead of one, ~7x faster on
    CPU than ``random_(0, 256)`` on uint8 (0.22 vs 1.68 ms for seed 000's 590k-element mask), and
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
    any other p is ``nn.Dropout`` itself. ``bernoulli_`` on CPU draws a double per element: this mask
    made seed 000's training step 13% faster on 2 cores, and drawing its bytes 8 at a time
    (``random_bytes_like``) faster again (BENCHMARKS.md, training speed).
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
    ReLU runs on 4x fewer pixels and the pool's backward gets cheaper: seed 000's bf16 training
    step ~20% faster on 2 cores (BENCHMARKS.md, training speed). Both layers have no parameters:
    state_dict keys do not change. ``as_the_seed_wrote_it`` puts the seed's order back.
    """
    _swap_pairs(seq, nn.ReLU, nn.MaxPool2d)
    seq.pooled_first = True
    return seq


def as_the_seed_wrote_it(model: nn.Module) -> nn.Module:
    """``model`` with digitlab's speed changes undone (in place; returned): every ``ByteDropout`` back to
    the seeds' ``nn.Dropout``, and every ReLU back before its max pool (``pool_before_relu``)."""
    for m in list(model.modules()):
        if isinstance(m, nn.Sequential) and getattr(m, "pooled_first", False):
            _swap_pairs(m, nn.MaxPool2d, nn.ReLU)
            m.pooled_first = False
        if isinstance(m, SmallCNN):
            m.pool_first = False
    for parent in list(model.modules()):
        for name, child in parent.named_children():
            if isinstance(child, ByteDropout):
                setattr(parent, name, nn.Dropout(child.p, child.inplace))
    return model


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


@register_model("cnn-small", "seed 002: tiny 2-conv CNN with as many parameters as the 8-unit mlp")
def cnn_small(*, num_classes: int = 10, in_channels: int = 1, image_size: int = 28, n_feature: int = 6) -> nn.Module:
    require_min_size("cnn-small", image_size, 16)  # 5x5 conv, pool, 5x5 conv, pool
    return SmallCNN(num_classes, in_channels, image_size, n_feature)


@register_model("cnn", "seed 000: the pytorch/examples MNIST CNN (conv32, conv64, dropout, fc128)")
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


@register_model("cnn-k", "seed 001: two conv+pool blocks and fc64 (Keras-tutorial style)")
def cnn_k(*, num_classes: int = 10, in_channels: int = 1, image_size: int = 28) -> nn.Module:
    require_min_size("cnn-k", image_size, 10)  # 3x3 conv, pool, 3x3 conv, pool
    return KerasStyleCNN(num_classes, in_channels, image_size)


@register_model("cnn-004", "seed 004: conv16 + conv64 with pooling, dropout, one linear layer")
def cnn_004(
    *,
    num_classes: int = 10,
    in_channels: int = 1,
    image_size: int = 28,
    dropout: float = 0.5,  # nn.Dropout()'s default, as in the seed
) -> nn.Module:
    require_min_size("cnn-004", image_size, 12)  # 5x5 conv, pool, 3x3 conv, pool
    return Net004(num_classes, in_channels, image_size, dropout)


@register_model("cifar-net", "seed 002: the PyTorch-tutorial CIFAR-10 net (conv6, conv16, fc120, fc84)")
def cifar_net(*, num_classes: int = 10, in_channels: int = 3, image_size: int = 32) -> nn.Module:
    require_min_size("cifar-net", image_size, 16)  # 5x5 conv, pool, 5x5 conv, pool
    return CifarNet(num_classes, in_channels, image_size)
