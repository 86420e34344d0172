"""Data parallelism for `mktod train`: one process per device, under ``torchrun`` or ``accelerate launch``.

The models are not wrapped in DistributedDataParallel: the generators call their submodules directly
(the FiD encoder and decoder, the causal generator's reused key/value cache), which bypasses DDP's
forward hooks. Instead the training loop calls :meth:`Group.sync_grads` after the backward passes of a
step, and every process then takes the same optimizer step on the same summed gradient.

A run of one process never creates a process group; every :class:`Group` method is then a no-op that
returns its input, so single-process numbers are exactly those of a loop without this module.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar

import torch
import torch.distributed as dist
from torch import Tensor, nn

from mktod.errors import ConfigError

T = TypeVar("T")

# Rank 0's dev evaluation holds the other processes at a collective; NCCL's default of 10 minutes would
# end a run whose evaluation takes longer. A dead process still ends the run at once: the launcher
# stops the others.
TIMEOUT = timedelta(hours=2)
BUCKET_ELEMENTS = 1 << 24  # gradients are summed in flat buckets of up to 64 MB (fp32)


@dataclass(frozen=True)
class Launch:
    """This process's place in a launch: ``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK`` as torchrun and
    ``accelerate launch`` set them. The default is a plain single-process run."""

    world_size: int = 1
    rank: int = 0
    local_rank: int = 0

    def __post_init__(self) -> None:
        if self.world_size < 1 or not 0 <= self.rank < self.world_size or self.local_rank < 0:
            raise ConfigError(
                f"invalid launch: rank {self.rank} of {self.world_size} processes, local rank "
                f"{self.local_rank}; start several processes with torchrun or accelerate launch"
            )

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Launch:
        """The launch that ``env`` (the CLI passes os.environ) describes; no WORLD_SIZE: one process."""
        try:
            return cls(int(env.get("WORLD_SIZE", 1)), int(env.get("RANK", 0)), int(env.get("LOCAL_RANK", 0)))
        except ValueError as exc:
            raise ConfigError(f"WORLD_SIZE, RANK and LOCAL_RANK must be integers: {exc}") from exc

    def device(self, device: str) -> str:
        """This process's device: with several processes ``cuda`` means ``cuda:LOCAL_RANK``."""
        if self.world_size == 1:
            return device
        kind = torch.device(device)
        if kind.type == "cuda" and kind.index is not None:
            raise ConfigError(
                f"--device {device} with {self.world_size} processes: pass --device cuda, and each process "
                "takes the GPU of its local rank (choose GPUs with CUDA_VISIBLE_DEVICES)"
            )
        return f"cuda:{self.local_rank}" if kind.type == "cuda" else device


SINGLE = Launch()


class Group:
    """The processes of one training run and the few collectives the loop needs.

    ``device`` is where collective buffers live: this process's GPU with NCCL, the CPU with gloo.
    """

    def __init__(self, launch: Launch, device: torch.device) -> None:
        self.world_size, self.rank, self.device = launch.world_size, launch.rank, device

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes files, logs and evaluates."""
        return self.rank == 0

    def shard(self, items: Sequence[T]) -> list[T]:
        """This process's share of a micro-batch: every ``world_size``-th item from its rank."""
        return list(items[self.rank :: self.world_size])

    def sum(self, values: Sequence[float]) -> list[float]:
        """Each value summed over the processes (float64, so counts stay exact)."""
        if self.world_size == 1:
            return list(values)
        buffer = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(buffer)
        return [float(v) for v in buffer.tolist()]

    def sum_present(self, values: Mapping[str, float], keys: Sequence[str]) -> dict[str, float]:
        """``values`` summed over the processes, for the ``keys`` that any process has, in that order."""
        if self.world_size == 1:
            return {k: values[k] for k in keys if k in values}
        summed = self.sum([*(values.get(k, 0.0) for k in keys), *(float(k in values) for k in keys)])
        seen = summed[len(keys) :]
        return {k: summed[i] for i, k in enumerate(keys) if seen[i] > 0}

    def broadcast(self, values: Sequence[float]) -> list[float]:
        """Rank 0's ``values`` on every process."""
        if self.world_size == 1:
            return list(values)
        buffer = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.broadcast(buffer, src=0)
        return [float(v) for v in buffer.tolist()]

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()

    @torch.no_grad()
    def broadcast_params(self, params: Sequence[nn.Parameter]) -> None:
        """Rank 0's weights everywhere: replicas that started apart would stay apart for good."""
        if self.world_size > 1:
            _in_buckets([p.data for p in params], lambda flat: dist.broadcast(flat, src=0))

    @torch.no_grad()
    def sync_grads(self, params: Sequence[nn.Parameter]) -> None:
        """Sum every parameter's gradient over the processes, in place.

        A parameter without a gradient here (a process with no turn in a micro-batch, a branch this
        shard never took) takes part with zeros; one that no process has a gradient for keeps None, so
        the optimizer skips it (no weight decay) exactly as in a single-process run.
        """
        if self.world_size == 1:
            return
        present = self.sum([float(p.grad is not None) for p in params])
        live = [p for p, n in zip(params, present, strict=True) if n > 0]
        for p in live:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        grads = [p.grad for p in live if p.grad is not None]  # all of them; the filter is for mypy
        _in_buckets(grads, dist.all_reduce)


def _in_buckets(tensors: Sequence[Tensor], collective: Callable[[Tensor], object]) -> None:
    """Apply ``collective`` to the tensors, in place, through flat buffers of one device and dtype and
    up to BUCKET_ELEMENTS elements: one call per bucket instead of one per tensor, and no second copy
    of the whole model."""
    for bucket in _buckets(tensors):
        flat = torch.cat([t.reshape(-1) for t in bucket])
        collective(flat)
        for t, part in zip(bucket, torch.split(flat, [t.numel() for t in bucket]), strict=True):
            t.copy_(part.view_as(t))


def _buckets(tensors: Sequence[Tensor]) -> Iterator[list[Tensor]]:
    bucket: list[Tensor] = []
    size = 0
    for t in tensors:
        same = bool(bucket) and (t.device, t.dtype) == (bucket[0].device, bucket[0].dtype)
        if bucket and (not same or size + t.numel() > BUCKET_ELEMENTS):
            yield bucket
            bucket, size = [], 0
        bucket.append(t)
        size += t.numel()
    if bucket:
        yield bucket


@contextmanager
def process_group(launch: Launch, device: str) -> Iterator[Group]:
    """The run's :class:`Group`, joined for the duration of the block (and left after it).

    NCCL on CUDA, gloo otherwise; rendezvous through the launcher's MASTER_ADDR and MASTER_PORT. A
    process group that the caller already started (e.g. by accelerate) is used as it is and kept.
    """
    where = torch.device(device)
    if launch.world_size == 1:
        yield Group(launch, where)
        return
    if where.type == "cuda":
        torch.cuda.set_device(where)
    owned = not dist.is_initialized()
    if owned:
        cuda = where.type == "cuda"
        dist.init_process_group(
            "nccl" if cuda else "gloo",
            timeout=TIMEOUT,
            world_size=launch.world_size,
            rank=launch.rank,
            device_id=where if cuda else None,
        )
    try:
        if dist.get_world_size() != launch.world_size:
            raise ConfigError(
                f"the process group has {dist.get_world_size()} processes, the launch {launch.world_size}"
            )
        yield Group(launch, where if where.type == "cuda" else torch.device("cpu"))
    finally:
        if owned:
            dist.destroy_process_group()
