"""One path for one process and many: DDP is switched on by the environment torchrun sets."""

from __future__ import annotations

import gc
import os
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as torch_dist

from digitlab.errors import DigitlabError

# How long a rank waits for the others to join (torch's own default for the default group).
STORE_TIMEOUT = timedelta(minutes=10)


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


def rank_device(info: DistInfo, device: torch.device) -> torch.device:
    """This rank's device: its own GPU (``LOCAL_RANK``) under torchrun, else ``device`` itself."""
    if info.enabled and device.type == "cuda":
        return torch.device("cuda", info.local_rank)
    return device


def setup(info: DistInfo, device: torch.device) -> torch.device:
    """Join the process group (nccl on GPUs, gloo on CPU) and return this rank's device."""
    if not info.enabled:
        return device
    device = rank_device(info, device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not torch_dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        store = _attempt_store(info)
        if store is None:
            torch_dist.init_process_group(backend=backend)
        else:
            torch_dist.init_process_group(backend=backend, store=store, rank=info.rank, world_size=info.world_size)
    return device


def _attempt_store(info: DistInfo) -> torch_dist.Store | None:
    """The torchrun agent's store, seen under a prefix of its own for each restart; None: env:// as usual.

    Why: torchrun's c10d rendezvous keeps one TCP store for every restart of the worker group, and
    ``init_process_group`` reads the ranks' addresses from it under the same keys each time. A
    restarted rank 0 can then read the address that the killed rank published before it died and
    fail with "Gloo connectFullMesh failed ... Connection refused". A prefix per restart
    (``TORCHELASTIC_RESTART_COUNT``) keeps each start's keys apart.
    """
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return None
    store = torch_dist.TCPStore(
        host_name=os.environ["MASTER_ADDR"],
        port=int(os.environ["MASTER_PORT"]),
        world_size=info.world_size,
        is_master=False,  # the agent hosts the store
        timeout=STORE_TIMEOUT,
    )
    return torch_dist.PrefixStore(f"digitlab/attempt_{restart_count()}", store)


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


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))  # the cores this process may use (taskset, cgroups)
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def rank_threads(info: DistInfo, requested: int | None) -> int | None:
    """Torch threads for this process: ``requested`` (``--threads``) if given; under torchrun, this
    machine's cores shared by its ranks; otherwise None (torch's default, every core).

    Why: torchrun sets ``OMP_NUM_THREADS=1`` for every rank unless it is already set, which leaves a
    CPU rank on one core: two ranks on an 8-core machine would use 2 of the 8. An
    ``OMP_NUM_THREADS`` other than 1 is the user's own choice and is kept.
    """
    if requested:
        return requested
    if not info.enabled:
        return None
    omp = os.environ.get("OMP_NUM_THREADS", "").strip()
    if omp and omp != "1":
        return None
    local = int(os.environ.get("LOCAL_WORLD_SIZE") or 1)
    return max(1, _cores() // max(1, local))


def set_threads(info: DistInfo, requested: int | None) -> None:
    """Apply ``rank_threads``; the training calls it once per process, before the first step."""
    n = rank_threads(info, requested)
    if n:
        torch.set_num_threads(n)


def restart_count() -> int:
    """How many times torchrun has restarted this worker group (0 on the first start, or without torchrun)."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT") or 0)


def restart_resume(run_flags: dict) -> str | None:
    """The run directory a restarted torchrun worker continues, or None to start as given.

    ``torchrun --max-restarts N`` restarts every rank, with the same command line, after one dies;
    the restarted training resumes from the run's ``last.pt`` (as ``--resume`` would) instead of
    starting again or being refused as an existing run. A run is found by its ``--name``, so one is
    required when restarts are allowed (a generated name would differ at each start).

    Args:
        run_flags: the ``run`` flags given (``name``, ``runs_dir``; absent or None: not given).
    """
    if int(os.environ.get("TORCHELASTIC_MAX_RESTARTS") or 0) == 0:
        return None
    name = run_flags.get("name")
    if not name:
        raise DigitlabError(
            "torchrun --max-restarts resumes a run by its name after a restart: pass --name for this training"
        )
    if restart_count() == 0:
        return None
    from digitlab.config import RunConfig

    run_dir = Path(run_flags.get("runs_dir") or RunConfig().runs_dir) / name
    return str(run_dir) if (run_dir / "last.pt").is_file() else None
