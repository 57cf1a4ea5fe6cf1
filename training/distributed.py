"""Where a training process stands: single process, or one rank of a torchrun (DDP) job."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from .config import ConfigError

_joined_here = False  # whether init_processes created the process group (and so should destroy it)


@dataclass
class Processes:
    """Where this process stands in a (possibly single-process) DDP job started by torchrun."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(option: str, local_rank: int = 0) -> torch.device:
    if option == "auto":
        return torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    device = torch.device(option)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"train.device is {option!r} but CUDA is not available here: use --device cpu")
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank)
    return device


def init_processes(device_option: str) -> tuple[Processes, torch.device]:
    """Join the torchrun job if there is one (gloo on CPU, NCCL on CUDA); pick this process's device."""
    processes = Processes(
        int(os.environ.get("RANK", 0)),
        int(os.environ.get("WORLD_SIZE", 1)),
        int(os.environ.get("LOCAL_RANK", 0)),
    )
    device = resolve_device(device_option, processes.local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if processes.distributed and not dist.is_initialized():
        global _joined_here
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        _joined_here = True
    return processes, device


def leave_processes() -> None:
    """Destroy the process group init_processes created (a caller's own group is left alone)."""
    global _joined_here
    if _joined_here and dist.is_initialized():
        dist.destroy_process_group()
    _joined_here = False


def barrier(processes: Processes) -> None:
    if processes.distributed:
        dist.barrier()
