"""Where training runs: the device, and data parallelism for the contrastive loop.

Data parallelism shards each global batch and gathers the embeddings back.
Every process draws the same global batch (the order depends only on seed, stage and
epoch), embeds its contiguous share of the rows, and all-gathers the embeddings so each
process computes the loss over the whole global batch, as CLIP and ImageBind do: a
positive still sees every negative in the batch, whatever the number of processes. Only a
process's own rows carry gradient; scaling the loss by the world size before DDP averages
the gradients makes the update equal to the single-process one on the same global batch.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel


@dataclass(frozen=True)
class DataParallel:
    """This process's place in the group; the default is a single process (no collectives)."""

    rank: int = 0  # index of this process in the group
    world_size: int = 1  # number of processes sharing each global batch

    @classmethod
    def current(cls) -> DataParallel:
        """The initialised default process group (torchrun), or a single process when there is none."""
        if dist.is_available() and dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size())
        return cls()

    @property
    def is_main(self) -> bool:
        """The one process that writes checkpoints and calls loggers."""
        return self.rank == 0

    def shard_sizes(self, batch_rows: int) -> list[int]:
        """Rows of a global batch per process: contiguous, sizes differing by at most one."""
        base, extra = divmod(batch_rows, self.world_size)
        return [base + (1 if r < extra else 0) for r in range(self.world_size)]

    def local_rows(self, batch_rows: int) -> slice:
        """This process's contiguous share of a global batch of `batch_rows` rows."""
        sizes = self.shard_sizes(batch_rows)
        start = sum(sizes[: self.rank])
        return slice(start, start + sizes[self.rank])

    def gather_rows(self, local: Tensor, batch_rows: int) -> Tensor:
        """(local, D) → (batch_rows, D): every process's rows in order; only ours keep their gradient."""
        if self.world_size == 1:
            return local
        sizes = self.shard_sizes(batch_rows)
        width = max(sizes)  # all_gather needs equal shapes: pad, gather, strip
        padded = F.pad(local.detach(), (0, 0, 0, width - local.shape[0]))
        parts = [torch.empty_like(padded) for _ in sizes]
        dist.all_gather(parts, padded)
        rows = [part[:n] for part, n in zip(parts, sizes)]
        rows[self.rank] = local
        return torch.cat(rows)

    def scale_loss(self, loss: Tensor) -> Tensor:
        """The loss times the world size, so DDP's gradient average equals the single-process gradient."""
        return loss if self.world_size == 1 else loss * self.world_size

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        """DDP around `model` for the parameters that currently require grad; the model itself alone."""
        if self.world_size == 1:
            return model
        ids = [device.index] if device.type == "cuda" else None
        # Buffers are constants here (positional tables, normalisation stats): no per-step broadcast.
        return DistributedDataParallel(model, device_ids=ids, broadcast_buffers=False)


def resolve_device(name: str) -> torch.device:
    """`TrainConfig.device` as a torch device; "auto" is the current CUDA device, else the CPU."""
    if name == "auto":
        return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return device


@contextmanager
def trainable_only(model: nn.Module, params: list[nn.Parameter]) -> Iterator[None]:
    """Let only `params` require grad inside the block (DDP reduces exactly those), then restore."""
    wanted = {id(p) for p in params}
    before = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in before:
        p.requires_grad_(id(p) in wanted)
    try:
        yield
    finally:
        for p, flag in before:
            p.requires_grad_(flag)
