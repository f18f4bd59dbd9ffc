"""One path for one process and many: DDP is switched on by the environment torchrun sets."""

from __future__ import annotations

import gc
import os
from dataclasses import dataclass

import torch
import torch.distributed as torch_dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def detect() -> DistInfo:
    """Read torchrun's RANK / WORLD_SIZE / LOCAL_RANK; absent means a single process."""
    return DistInfo(
        rank=int(os.environ.get("RANK", 0)),
        world_size=int(os.environ.get("WORLD_SIZE", 1)),
        local_rank=int(os.environ.get("LOCAL_RANK", 0)),
    )


def setup(info: DistInfo, device: torch.device) -> torch.device:
    """Join the process group (nccl on GPUs, gloo on CPU) and return this rank's device."""
    if not info.enabled:
        return device
    if device.type == "cuda":
        device = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(device)
    if not torch_dist.is_initialized():
        torch_dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return device


def all_reduce_sum(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum a metric tensor over ranks (a no-op for one process)."""
    if info.enabled:
        torch_dist.all_reduce(t, op=torch_dist.ReduceOp.SUM)
    return t


def teardown(info: DistInfo) -> None:
    """Leave the process group together, after the caller has dropped its DDP wrapper.

    Why: rank 0 saves checkpoints and reports, so the other ranks reach this point first; without a
    barrier they shut gloo down while rank 0 still runs. CI once saw rank 1 abort (SIGABRT) in a
    2-process run, cause not captured. So: no rank closes its connections before all are done,
    and no DDP reducer (freed here if a reference cycle kept it) outlives its shut-down group.
    """
    if info.enabled and torch_dist.is_initialized():
        gc.collect()
        torch_dist.barrier()
        torch_dist.destroy_process_group()
