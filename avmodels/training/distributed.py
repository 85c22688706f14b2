"""Where this process runs: alone, or as one rank of a ``torchrun`` job (gloo on CPU, NCCL on GPU)."""
from __future__ import annotations

import dataclasses
import os

import torch
import torch.distributed as dist


@dataclasses.dataclass(frozen=True)
class Node:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def main(self) -> bool:
        """Rank 0 alone writes logs, pictures and checkpoints."""
        return self.rank == 0


def start_node(device: str | None = None) -> Node:
    """Join the process group ``torchrun`` describes in the environment (WORLD_SIZE, RANK, LOCAL_RANK), if any.

    ``device``: "cpu", "cuda", or None for CUDA when there is one.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() if device is None else device.startswith("cuda")
    if use_cuda and not torch.cuda.is_available():
        raise RuntimeError("--device cuda asked for, but torch sees no CUDA device")
    where = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        if use_cuda:
            torch.cuda.set_device(where)
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return Node(rank, world_size, local_rank, where)


def gather(value) -> list:
    """Every rank's ``value``, in rank order (a collective: all ranks must call it)."""
    if not dist.is_initialized():
        return [value]
    values = [None] * dist.get_world_size()
    dist.all_gather_object(values, value)
    return values


def stop_node(finished: bool = True) -> None:
    """Leave the process group; after a run that ``finished``, once every rank has (tearing the group down while
    another rank still talks to it can abort the process). A failed rank leaves at once: torchrun stops the rest."""
    if dist.is_initialized():
        if finished:
            dist.barrier()
        dist.destroy_process_group()
