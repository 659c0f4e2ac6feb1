"""Single-process or torchrun-launched distributed data parallel training, behind one interface.

Under ``torchrun`` (``WORLD_SIZE`` > 1 in the environment) each process joins a process group
(NCCL on CUDA, gloo on CPU), drives one GPU, and every trained network is wrapped in
``DistributedDataParallel``; otherwise nothing is wrapped and the collectives below are no-ops,
so the training loop has no ``if distributed`` branches of its own.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

BACKENDS = ("nccl", "gloo")


@dataclass(frozen=True)
class DistEnv:
    """This process's place in the run: rank, world size and the device it drives."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")
    backend: str | None = None

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 writes every file (one writer per folder)."""
        return self.rank == 0


def launched_by_torchrun() -> bool:
    """True inside a process started by torch.distributed.run with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


NO_DEVICES = {"", "-1", "NoDevFiles"}


def allocated_gpu_count(requested: int, environ: Mapping[str, str] | None = None) -> int:
    """Training processes to launch: one per GPU the job may use.

    Inside a SLURM job (SLURM_JOB_ID set) CUDA_VISIBLE_DEVICES lists exactly the GPUs allocated,
    which may be fewer or more than the config asked for: use them all. Elsewhere the configured
    ``requested`` count stands, capped by CUDA_VISIBLE_DEVICES when the user set it.
    ``requested`` 0 means a CPU run.
    """
    if requested <= 0:
        return 0
    environ = os.environ if environ is None else environ
    visible = environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return requested
    visible = visible.strip()
    count = 0 if visible in NO_DEVICES else len([d for d in visible.split(",") if d.strip()])
    return count if "SLURM_JOB_ID" in environ else min(requested, count)


def pick_device(local_rank: int = 0, device: str | None = None) -> torch.device:
    """``device`` if given, else this rank's CUDA device, else the CPU."""
    if device is not None:
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def init_distributed(backend: str | None = None, device: str | None = None) -> DistEnv:
    """Join the torchrun process group when there is one; otherwise a single-process env."""
    if not launched_by_torchrun():
        return DistEnv(device=pick_device(0, device))
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    world_size = int(os.environ["WORLD_SIZE"])
    target = pick_device(local_rank, device)
    backend = backend or ("nccl" if target.type == "cuda" else "gloo")
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {BACKENDS}")
    if target.type == "cuda":
        torch.cuda.set_device(target)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return DistEnv(rank, local_rank, world_size, target, backend)


def wrap(module: nn.Module, env: DistEnv, find_unused_parameters: bool = False) -> nn.Module:
    """``module`` inside DistributedDataParallel when distributed, else ``module`` itself.

    Every parameter of the trained networks receives a gradient in every step, so unused-parameter
    search (an extra graph traversal per step) stays off unless a caller asks for it.
    """
    if not env.distributed:
        return module
    device_ids = [env.device.index] if env.device.type == "cuda" else None
    return DistributedDataParallel(
        module, device_ids=device_ids, find_unused_parameters=find_unused_parameters
    )


def unwrap(module: nn.Module) -> nn.Module:
    """The network inside a DDP wrapper (for state dicts and non-forward methods)."""
    return module.module if isinstance(module, DistributedDataParallel) else module


def all_reduce_sum(tensor: torch.Tensor, env: DistEnv) -> torch.Tensor:
    """Sum of ``tensor`` over ranks (a copy; unchanged when single-process)."""
    out = tensor.clone()
    if env.distributed:
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


def all_gather_objects(obj: Any, env: DistEnv) -> list[Any]:
    """``[obj of rank 0, obj of rank 1, ...]``; ``[obj]`` when single-process."""
    if not env.distributed:
        return [obj]
    gathered: list[Any] = [None] * env.world_size
    dist.all_gather_object(gathered, obj)
    return gathered


def barrier(env: DistEnv) -> None:
    if env.distributed:
        dist.barrier()


def cleanup(env: DistEnv) -> None:
    """Leave the process group (after a barrier, so no rank exits while others still write)."""
    if env.distributed and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


__all__ = [
    "BACKENDS",
    "NO_DEVICES",
    "allocated_gpu_count",
    "DistEnv",
    "all_gather_objects",
    "all_reduce_sum",
    "barrier",
    "cleanup",
    "init_distributed",
    "launched_by_torchrun",
    "pick_device",
    "unwrap",
    "wrap",
]
