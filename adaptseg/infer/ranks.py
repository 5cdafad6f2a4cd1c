"""Inference beyond one device: ``adaptseg pseudo-label`` and ``adaptseg eval --model`` under ``torchrun``.

Like ``train``, the commands read ``torchrun``'s environment (:mod:`adaptseg.train.distributed`): with
``WORLD_SIZE > 1`` every process takes the device of its ``LOCAL_RANK`` (CPU processes talk over gloo,
GPUs over NCCL) and runs the engine over its own shard of the images, ``rank::world_size`` of the
split's order. What the shards make is then combined:

* pseudo-labels: every rank writes its images' files into the one store (each file atomically; the
  store's ``store.json`` is written once, by rank 0, before the others start);
* evaluation: the confusion matrices are summed over the ranks (an all-reduce), so every rank holds
  the split's matrix and rank 0 reports it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from adaptseg.train.distributed import (
    DistInfo,
    all_gather_object,
    barrier,
    dist_from_env,
    init_distributed,
    pick_device,
    shutdown_distributed,
)

__all__ = ["DistInfo", "all_gather_object", "barrier", "inference_processes", "shard"]


@contextmanager
def inference_processes(device: str) -> Iterator[tuple[DistInfo, str]]:
    """This process's place among ``torchrun``'s processes and the device it runs on.

    A single process keeps ``device`` as given (``auto``, ``cpu``, ``cuda:1`` …); under ``torchrun``
    each process takes its ``LOCAL_RANK``'s GPU (or the CPU) and joins the process group, which is
    left again at the end when this call created it.
    """
    info = dist_from_env()
    if not info.enabled:
        yield info, device
        return
    chosen = pick_device(device, info)
    owns_group = init_distributed(info, chosen)
    try:
        yield info, str(chosen)
    finally:
        if owns_group:
            shutdown_distributed()


def shard(indices: Sequence[int], info: DistInfo) -> list[int]:
    """This rank's share of ``indices``: every ``world_size``-th one from its rank (all of them alone).

    Fixed by position, not by what is left to do, so ranks agree on who does what without talking,
    whatever the others have written meanwhile.
    """
    return list(indices)[info.rank :: info.world_size]


def gathered_sum(values: Sequence[int], info: DistInfo) -> list[int]:
    """Element-wise sums of ``values`` over the ranks (``values`` itself for one process)."""
    return [sum(column) for column in zip(*all_gather_object(list(values), info), strict=True)]
