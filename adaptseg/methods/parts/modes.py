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


@contextmanager
def kept_running_statistics(model: nn.Module) -> Iterator[nn.Module]:
    """Within the block, BatchNorm layers in train mode update no running statistics.

    They still normalise with the batch's statistics (the forward is unchanged); their momentum is 0 for
    the block (the running mean and variance stay exactly as they were; ``num_batches_tracked`` still
    counts the pass) and restored afterwards, also when the block raises.
    """
    saved = [
        (module, module.momentum)
        for module in model.modules()
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.track_running_stats
    ]
    try:
        for module, _ in saved:
            module.momentum = 0.0
        yield model
    finally:
        for module, momentum in saved:
            module.momentum = momentum
