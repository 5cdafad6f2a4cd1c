"""Processes and devices: one process per device, launched by ``torchrun`` (or a single process).

``torchrun`` sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; with ``WORLD_SIZE > 1`` the process group
is initialised with **NCCL on CUDA and gloo on CPU**. Only rank 0 writes files and logs; the others wait
at barriers where rank 0 writes something they read next.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from adaptseg.errors import UserError


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits: its rank among ``world_size`` processes and its device index."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def dist_from_env() -> DistInfo:
    """The ``torchrun`` environment (a single process when it is absent)."""
    try:
        return DistInfo(
            rank=int(os.environ.get("RANK", 0)),
            world_size=int(os.environ.get("WORLD_SIZE", 1)),
            local_rank=int(os.environ.get("LOCAL_RANK", 0)),
        )
    except ValueError:
        raise UserError("RANK/WORLD_SIZE/LOCAL_RANK are not integers", fix="launch with torchrun") from None


def pick_device(kind: str, info: DistInfo) -> torch.device:
    """``auto``: this process's GPU when CUDA is available, else the CPU; ``cuda`` requires a GPU."""
    if kind == "cpu" or (kind == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise UserError(
            "the recipe asks for device: cuda but no CUDA device is available", fix="--set device=cpu"
        )
    if info.local_rank >= torch.cuda.device_count():
        raise UserError(
            f"LOCAL_RANK {info.local_rank} but only {torch.cuda.device_count()} CUDA device(s)",
            fix="launch at most one process per GPU (torchrun --nproc_per_node)",
        )
    return torch.device("cuda", info.local_rank)


def init_distributed(info: DistInfo, device: torch.device) -> bool:
    """Initialise the default process group for a multi-process run; True if this call created it."""
    if not info.enabled or dist.is_initialized():
        return False
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return True


def shutdown_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.barrier()


def all_gather_object(obj: Any, info: DistInfo) -> list[Any]:
    """Every rank's ``obj``, in rank order (``[obj]`` for a single process)."""
    if not (info.enabled and dist.is_initialized()):
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, info: DistInfo) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if not (info.enabled and dist.is_initialized()):
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def mean_across_ranks(values: torch.Tensor) -> torch.Tensor:
    """The element-wise mean of ``values`` over the processes of the default group (itself without one)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return values
    summed = values.clone()
    dist.all_reduce(summed)
    return summed / dist.get_world_size()
