"""Thin helpers over torch.distributed, usable with or without an initialised process group."""
from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import Tensor


def init() -> None:
    """Initialise the process group the DeepSpeed way (gloo on CPU, nccl on CUDA)."""
    os.environ.setdefault("DS_ACCELERATOR", "cuda" if torch.cuda.is_available() else "cpu")
    import deepspeed

    if not dist.is_initialized():
        deepspeed.init_distributed()


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")


def gather_with_grad(local: Tensor) -> Tensor:
    """Concatenate per-rank [b] tensors (equal b) in rank order; this rank's slice keeps its graph.

    Used so a batch-coupled loss sees the global batch. Each rank back-propagates only through its
    own slice, so the global-loss gradient is the *sum* over ranks of the per-rank gradients; the
    caller multiplies the loss by world_size to undo DeepSpeed's gradient averaging.
    """
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return local
    parts = [torch.empty_like(local) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, local.detach().contiguous())
    parts[dist.get_rank()] = local
    return torch.cat(parts)


def all_reduce_max(value: int) -> int:
    if not dist.is_initialized():
        return value
    t = torch.tensor([value], dtype=torch.long, device=device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t.item())


def broadcast_object(obj):
    if not dist.is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather(local: Tensor) -> Tensor:
    """Concatenate per-rank [b] tensors (equal b) in rank order, without gradient."""
    return gather_with_grad(local.detach())
