"""The seeds' own state_dict key names, so a tutorial's code loads digitlab's weights unchanged.

digitlab's versions of the seeds' networks group their layers in ``nn.Sequential`` blocks
(``features.0``), where some seeds named each layer (``conv1``); each model's registration
says which names differ (``seed_keys``). ``digitlab export RUN --seed-format out.pt`` writes the
result, and seed 000's ``Net`` from pytorch/examples takes it with ``load_state_dict(strict=True)``.
"""

from __future__ import annotations

import torch

from digitlab.errors import DigitlabError
from digitlab.models.registry import list_models, model_info


def seed_models() -> list[str]:
    """The registered models that are a seed's network."""
    return [m.name for m in list_models() if m.seed is not None]


def seed_state_dict(model_name: str, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state_dict`` of ``model_name`` under the seed's own key names, in float32 (the seeds' dtype).

    Raises:
        DigitlabError: the model is not a seed's network (digitlab's own, or an imported one).
    """
    info = model_info(model_name)
    if info.seed is None:
        raise DigitlabError(
            f"model {model_name!r} is not one of the seeds' networks, so it has no seed format; "
            f"--seed-format takes checkpoints of {', '.join(seed_models())}"
        )
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        module, _, param = key.rpartition(".")
        name = f"{info.seed_keys.get(module, module)}.{param}"
        out[name] = value.detach().float().clone() if value.is_floating_point() else value.detach().clone()
    return out
