"""AdaBN (Li et al., 2016): a trained model's BatchNorm statistics re-estimated on target images.

The cheap baseline every adaptation method must beat (DESIGN.md, MiniCity: "AdaBN recovers about half
of every gain; report it as a baseline next to every method"). Only the running mean/variance of each
BatchNorm layer change — no weight is trained. Every running statistic is reset and replaced by the
cumulative average (``momentum = None``) of the batch statistics over the batches given; dropout stays
off while the batches run. A model without BatchNorm (a LayerNorm transformer such as the DAFormer
presets) is left unchanged: AdaBN is a no-op there, which :func:`adabn` reports by returning 0.

Used by ``adaptseg demo`` and the MiniCity benchmarks (``bench/ddb_minicity.py``, ``bench/atp_minicity.py``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from adaptseg.methods.parts.batches import ordered_batches
from adaptseg.methods.parts.modes import batchnorm_layers, batchnorm_momentum


@torch.no_grad()
def adabn(model: nn.Module, batches: Iterable[Tensor]) -> int:
    """Re-estimate ``model``'s BatchNorm statistics as the cumulative average over ``batches``, in place.

    ``batches`` are model inputs (normalised N×3×H×W tensors on the model's device). Everything except
    the BatchNorm layers runs in eval mode (dropout off). The model is left in eval mode with every
    layer's momentum as before. Returns the number of batches run (0 when the model has no BatchNorm).
    """
    if not batchnorm_layers(model):
        return 0
    count = 0
    with batchnorm_momentum(model, None) as norms:  # cumulative moving average over all batches
        for m in norms:
            m.reset_running_stats()
        model.eval()
        for m in norms:
            m.train()
        try:
            for batch in batches:
                model(batch)
                count += 1
        finally:
            model.eval()
    if count == 0:
        raise ValueError("adabn needs at least one batch of target images")
    return count


def image_batches(
    dataset: Any,
    mean: Sequence[float],
    std: Sequence[float],
    *,
    batch_size: int = 4,
    limit: int | None = None,
    device: str | torch.device = "cpu",
) -> Iterator[Tensor]:
    """Whole images of ``dataset`` (a reader: ``len``, ``read_image``) in order, normalised, in batches.

    Images of one batch must share a size (MiniCity's do). ``limit`` caps the number of images.
    """
    from adaptseg.data.pipeline import with_normalize

    return ordered_batches(
        dataset, with_normalize([], mean, std), batch_size=batch_size, limit=limit, device=device
    )
