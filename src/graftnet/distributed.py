"""Data-parallel training across processes, with PyTorch's own engine (torch.distributed).

``torchrun --nproc-per-node N -m graftnet train RECIPE`` starts N processes with
``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK`` in their environment; ``graftnet train`` calls
:func:`init_from_env` (gloo on the CPU, NCCL on CUDA) and ``train.fit`` then trains with
``DistributedDataParallel``: every rank draws the same epoch permutation, takes its slice
of each global batch (:func:`rank_slice`), and scales its summed loss by
``world_size / global batch size`` so the averaged gradients are those of one process
with the same global batch. Rank 0 alone writes files; the others wait at a barrier.

    >>> world = init_from_env()          # a no-op (World(rank=0, size=1)) outside torchrun
    >>> world.is_main, world.size
    (True, 1)

Only plain tensors cross between ranks (no pickled objects): text is sent as bytes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from graftnet.errors import ConfigError

__all__ = ["World", "current", "init_from_env", "shutdown", "rank_slice", "check_splittable",
           "all_gather_rows", "all_reduce_sum", "comm_device", "broadcast_text", "broadcast_int", "barrier"]


@dataclass(frozen=True)
class World:
    """Who this process is among the training processes: ``rank`` of ``size``."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        """More than one process trains together."""
        return self.size > 1

    @property
    def is_main(self) -> bool:
        """The process that prints and writes files (rank 0)."""
        return self.rank == 0


def current() -> World:
    """The world of the initialised process group, or a world of one."""
    if not (dist.is_available() and dist.is_initialized()):
        return World()
    return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))


def init_from_env(device: str | None = None) -> World:
    """Join the process group torchrun describes in the environment (``WORLD_SIZE``, ``RANK``,
    ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``); outside torchrun, a world of one.

    The backend is NCCL when CUDA is there and ``device`` is not ``"cpu"`` (each rank then
    uses ``cuda:LOCAL_RANK``), else gloo.
    """
    if "WORLD_SIZE" not in os.environ:
        return World()
    if dist.is_initialized():
        return current()
    use_cuda = torch.cuda.is_available() and not (device or "auto").startswith("cpu")
    if use_cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return current()


def shutdown() -> None:
    """Leave the process group (after the last collective call)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def check_splittable(n_examples: int, batch_size: int, world: World) -> None:
    """Every rank must get examples in a full global batch: refuse a world the data cannot be split across."""
    if not world.active:
        return
    if batch_size < world.size:
        raise ConfigError(f"batch_size {batch_size} cannot be split across {world.size} processes: the global "
                          f"batch is shared among the ranks, so it must be at least the world size "
                          f"({world.size}); use batch_size >= {world.size} or fewer processes")
    if n_examples < world.size:
        raise ConfigError(f"{n_examples} training example(s) cannot be split across {world.size} processes; "
                          f"use at most {n_examples} processes or more data")


def rank_slice(count: int, world: World) -> tuple[int, int]:
    """This rank's part ``[start, stop)`` of ``count`` items, split as ``torch.tensor_split``
    does (the first ``count % size`` ranks get one more); empty when ``count < size``."""
    base, extra = divmod(count, world.size)
    start = world.rank * base + min(world.rank, extra)
    return start, start + base + (1 if world.rank < extra else 0)


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` summed over the ranks, in place (returned for convenience)."""
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_gather_rows(part: torch.Tensor, total: int, world: World) -> torch.Tensor:
    """Concatenate every rank's ``part`` (its :func:`rank_slice` of ``total`` rows) in rank order:
    (total, ...). Parts are padded to one size for the collective and trimmed after."""
    longest = rank_slice(total, World(0, world.size))[1]  # rank 0's part is the largest
    padded = part.new_zeros((longest, *part.shape[1:]))
    padded[:len(part)] = part
    gathered = [torch.empty_like(padded) for _ in range(world.size)]
    dist.all_gather(gathered, padded.contiguous())
    pieces = []
    for rank, chunk in enumerate(gathered):
        start, stop = rank_slice(total, World(rank, world.size))
        pieces.append(chunk[:stop - start])
    return torch.cat(pieces)


def comm_device() -> torch.device:
    """Where tensors sent between ranks live: the rank's GPU under NCCL, else the CPU."""
    if dist.is_initialized() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def broadcast_int(value: int, world: World) -> int:
    """Rank 0's ``value`` on every rank."""
    if not world.active:
        return value
    tensor = torch.tensor([value], dtype=torch.int64, device=comm_device())
    dist.broadcast(tensor, src=0)
    return int(tensor.item())


def broadcast_text(text: str, world: World) -> str:
    """Rank 0's ``text`` on every rank (as UTF-8 bytes, no pickle)."""
    if not world.active:
        return text
    data = text.encode() if world.is_main else b""
    size = broadcast_int(len(data), world)
    buffer = torch.zeros(size, dtype=torch.uint8, device=comm_device())
    if world.is_main and size:
        buffer.copy_(torch.frombuffer(bytearray(data), dtype=torch.uint8))
    dist.broadcast(buffer, src=0)
    return bytes(buffer.cpu().tolist()).decode()


def barrier(world: World) -> None:
    """Wait until every rank is here (nothing to wait for in a world of one)."""
    if world.active:
        dist.barrier()
