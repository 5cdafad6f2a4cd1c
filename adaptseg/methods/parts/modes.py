"""Module modes for teacher forward passes: batch-norm in train mode, stochastic layers off.

Rule (atp.md §3 "EMA teacher", DAFormer/DACS ``ema_model`` pseudo-labelling): the teacher runs with its
BatchNorm layers in train mode (batch statistics, running statistics updated by its own forwards) while
Dropout and DropPath (stochastic depth) are switched off, so the pseudo-label is deterministic given the
batch. ddb.md §3 ST step 3 is the same rule for a model without DropPath.

Quirk switches: none.
"""

from __future__ import annotations

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
