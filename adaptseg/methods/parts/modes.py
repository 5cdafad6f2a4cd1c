"""Module modes for teacher forward passes: batch-norm in train mode, stochastic layers off.

Rule (atp.md §3 "EMA teacher", DAFormer/DACS ``ema_model`` pseudo-labelling): the teacher runs with its
BatchNorm layers in train mode (batch statistics, running statistics updated by its own forwards) while
Dropout and DropPath (stochastic depth) are switched off, so the pseudo-label is deterministic given the
batch. ddb.md §3 ST step 3 is the same rule for a model without DropPath.

:func:`kept_running_statistics` is the other mode a pass may need: BatchNorm normalises with the batch's
statistics (train mode) but leaves the running statistics as they were (MIC's ``running_stats: keep``).

Quirk switches: none.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn

from adaptseg.models.backbones.mit import DropPath


def is_stochastic_layer(module: nn.Module) -> bool:
    """True for Dropout layers (every ``nn.Dropout*``) and DropPath (stochastic depth)."""
    return isinstance(module, (nn.modules.dropout._DropoutNd, DropPath))


def batchnorm_train_stochastic_off(model: nn.Module) -> nn.Module:
    """Put ``model`` in train mode, then switch every Dropout/DropPath layer to eval; returns ``model``."""
    model.train()
    for module in model.modules():
        if is_stochastic_layer(module):
            module.eval()
    return model


def batchnorm_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """The model's BatchNorm layers (1-, 2- and 3-d, SyncBatchNorm included) that track running statistics."""
    return [
        m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
    ]


@contextmanager
def batchnorm_momentum(
    model: nn.Module, momentum: float | None
) -> Iterator[list[nn.modules.batchnorm._BatchNorm]]:
    """Within the block every running-statistics BatchNorm layer of ``model`` has ``momentum`` (``None``: a
    cumulative average, ``0.0``: no update); each layer's own momentum is restored afterwards, also when the
    block raises. Yields the layers."""
    norms = batchnorm_layers(model)
    saved = [m.momentum for m in norms]
    try:
        for m in norms:
            m.momentum = momentum
        yield norms
    finally:
        for m, value in zip(norms, saved, strict=True):
            m.momentum = value


@contextmanager
def kept_running_statistics(model: nn.Module) -> Iterator[nn.Module]:
    """Within the block, BatchNorm layers in train mode update no running statistics.

    They still normalise with the batch's statistics (the forward is unchanged); their momentum is 0 for
    the block (the running mean and variance stay exactly as they were; ``num_batches_tracked`` still
    counts the pass) and restored afterwards, also when the block raises.
    """
    with batchnorm_momentum(model, 0.0):
        yield model
