"""BatchNorm folded into the convolutions before inference: the same outputs from fewer layers."""

from __future__ import annotations

import copy

import torch


def fold_batchnorm(model: torch.nn.Module) -> torch.nn.Module:
    """An eval-mode copy of ``model`` with each Conv2d -> BatchNorm2d pair inside an ``nn.Sequential``
    replaced by one conv (``torch.nn.utils.fusion.fuse_conv_bn_eval``); other layers as they were.

    Conv2d -> MaxPool2d -> BatchNorm2d (``fast`` since checkpoint format 2) folds too where every
    channel's BatchNorm scale is positive: then max(s*x + b) = s*max(x) + b."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    def foldable(conv, bn) -> bool:
        return (
            type(conv) is torch.nn.Conv2d
            and type(bn) is torch.nn.BatchNorm2d
            and bn.track_running_stats
            and bn.num_features == conv.out_channels
        )

    def positive_scale(bn: torch.nn.BatchNorm2d) -> bool:
        return bn.weight is None or bool((bn.weight > 0).all())  # running_var + eps is always positive

    model = copy.deepcopy(model).eval()
    for seq in [m for m in model.modules() if isinstance(m, torch.nn.Sequential)]:
        layers = list(seq)
        for i in reversed(range(len(layers) - 1)):
            conv, nxt = layers[i], layers[i + 1]
            if foldable(conv, nxt):  # the types are checked there
                seq[i] = fuse_conv_bn_eval(conv, nxt)  # type: ignore[type-var, arg-type]
                del seq[i + 1]
            elif (
                i + 2 < len(layers)
                and type(nxt) is torch.nn.MaxPool2d
                and foldable(conv, layers[i + 2])
                and positive_scale(layers[i + 2])  # type: ignore[arg-type]
            ):
                seq[i] = fuse_conv_bn_eval(conv, layers[i + 2])  # type: ignore[type-var, arg-type]
                del seq[i + 2]
    return model


def _channels_last(x: torch.Tensor) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x
