"""Segmentation losses shared by the methods.

**Cross-entropy normalisation is always explicit** (shared/methods/README.md, fidelity policy 5): the
seeds disagree and the difference is a loss scale that changes results.

* ``"all_pixels"`` — mmseg 0.x ``CrossEntropyLoss`` (``avg_non_ignore=False``; DAFormer, DDB, ATP): the
  per-pixel losses (0 at ignored pixels) times the pixel weight, averaged over all ``B·H·W`` pixels, so
  ignored pixels stay in the denominator (ddb.md §3 "CE").
* ``"valid_pixels"`` — ``torch.nn.CrossEntropyLoss(ignore_index=255)`` (UMMA, DecoupleNet): the sum
  divided by the number of non-ignored pixels.

Logits at the model's output stride are upsampled bilinearly to the label size first (mmseg
``resize(..., align_corners=False)``; DecoupleNet and UMMA use ``align_corners=True``).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from adaptseg.data.labels import IGNORE_INDEX

CENormalize = Literal["all_pixels", "valid_pixels"]


def resize_logits(logits: Tensor, size: tuple[int, int], *, align_corners: bool = False) -> Tensor:
    """Bilinear resize of N×C×h×w logits to ``size`` (no-op when already that size)."""
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=align_corners)


def cross_entropy(
    logits: Tensor,
    target: Tensor,
    *,
    normalize: CENormalize,
    pixel_weight: Tensor | float | None = None,
    ignore_index: int = IGNORE_INDEX,
    align_corners: bool = False,
    temperature: float = 1.0,
) -> Tensor:
    """Per-pixel CE of ``logits`` (N×C×h×w, upsampled to the label size) against ``target`` (N×H×W long).

    Args:
        normalize: ``"all_pixels"`` (mmseg) or ``"valid_pixels"`` (torch), see the module docstring.
        pixel_weight: a scalar or an N×H×W tensor multiplying each pixel's loss (DACS quality weight).
        temperature: logits are divided by it before the softmax (DecoupleNet's T = 1.8).
    """
    if normalize not in ("all_pixels", "valid_pixels"):
        raise ValueError(f"normalize must be 'all_pixels' or 'valid_pixels', got {normalize!r}")
    logits = resize_logits(logits, tuple(target.shape[-2:]), align_corners=align_corners)
    if temperature != 1.0:
        logits = logits / temperature
    per_pixel = F.cross_entropy(logits.float(), target.long(), ignore_index=ignore_index, reduction="none")
    if pixel_weight is not None:
        per_pixel = per_pixel * pixel_weight
    if normalize == "all_pixels":
        return per_pixel.mean()
    valid = (target != ignore_index).sum()
    return per_pixel.sum() / torch.clamp(valid, min=1)
