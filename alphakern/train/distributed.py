"""Training on several processes, launched by ``torchrun`` (DistributedDataParallel).

torchrun sets RANK / LOCAL_RANK / WORLD_SIZE / MASTER_ADDR / MASTER_PORT; ``init_from_env`` then
joins the process group: NCCL with one GPU per local rank on CUDA, gloo on the CPU. Collectives
time out after ``TIMEOUT_S`` instead of waiting forever, and when one rank fails torchrun stops the
others and reports that rank's error. Without torchrun everything here is a no-op for one process.

What each rank holds: its shard of the training, validation and test splits (``shard``); the
metrics are sums all-reduced over the ranks (``all_reduce_sum``), so validation and test accuracy
are over the whole split.

Buffers: DDP broadcasts rank 0's buffers (BatchNorm statistics, each AlphaReLU's ν) before every
training forward. ν advances by the same step in every rank's forward, so it never differs; the
BatchNorm running statistics a rank updates in its last forward do, so ``sync_buffers`` copies
rank 0's to all ranks before every evaluation and checkpoint.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

TIMEOUT_S = 600.0  # a rank that waits longer than this on a collective fails instead of hanging


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched() -> bool:
    """True in a process started by torchrun (or another launcher setting WORLD_SIZE > 1)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def current() -> Dist:
    """This process's place in the initialised process group (one process if there is none)."""
    if not (dist.is_available() and dist.is_initialized()):
        return Dist()
    return Dist(dist.get_rank(), int(os.environ.get("LOCAL_RANK", "0")), dist.get_world_size())


def init_from_env(device: torch.device) -> torch.device:
    """Join the process group torchrun described; returns this rank's device (cuda:LOCAL_RANK on
    CUDA). Does nothing outside torchrun."""
    if not launched() or dist.is_initialized():
        return device
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    timeout = datetime.timedelta(seconds=TIMEOUT_S)
    dist.init_process_group(backend, timeout=timeout, device_id=device if device.type == "cuda" else None)
    return device


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def shard(indices: torch.Tensor, d: Dist, *, equal: bool) -> torch.Tensor:
    """This rank's share of ``indices`` (every world_size-th). ``equal``: all shards cut to the
    same length, so that every rank takes the same number of steps (DDP needs that)."""
    if not d.enabled:
        return indices
    part = indices[d.rank :: d.world_size]
    return part[: len(indices) // d.world_size] if equal else part


def all_reduce_sum(*tensors: torch.Tensor) -> None:
    """In place: each tensor becomes its sum over the ranks (nothing to do for one process)."""
    if current().enabled:
        for t in tensors:
            dist.all_reduce(t)


def sync_buffers(model: nn.Module) -> None:
    """Every rank takes rank 0's buffers (BatchNorm statistics, ν)."""
    if current().enabled:
        for b in model.buffers():
            dist.broadcast(b, src=0)


def barrier() -> None:
    if current().enabled:
        dist.barrier()


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """The model DDP trains (the model itself for one process)."""
    if not current().enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
