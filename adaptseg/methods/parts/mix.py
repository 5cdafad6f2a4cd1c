"""Mixing masks and mixed images, labels and pixel weights (cut-mix, class-mix, zero mix).

A mask ``M`` is a long tensor of 0/1 over the pixels (H×W for one image, N×H×W for a batch); ``M = 1``
marks pixels taken from the *first* operand (DDB: the source crop; ATP: the easy crop).

Spec rules implemented here:

* ddb.md §3 "Bridging":
  - **cut** (:func:`cut_mix_mask`, :func:`cut_mix_box`): height fraction ``h = 0.4^u``, width fraction
    ``w = 0.4/h``, box size ``round((h·H, w·W))``, top-left ``round((H − size_h, W − size_w)·(U₁, U₂))``;
    ``M = 1`` inside the box, which is the *source*.
  - **class** (:func:`class_mix_mask`): the ``K`` unique values of the source label *including 255*,
    ``ceil(K/2)`` of them drawn without replacement, ``M = 1`` where ``y_s`` is a drawn value.
  - **zero** (:func:`zero_mix_mask`): ``M = 0`` everywhere (CKD: the mix is the target crop).
  - ``x_m = M·x_s + (1 − M)·x_t`` (:func:`mix_images`).
* ddb.md §3 "ST step" 4: ``y_m = M·y_s + (1 − M)·ŷ`` (:func:`mix_labels`); pixel weight 1 where ``M = 1``
  and ``q`` where ``M = 0`` (:func:`mixed_pixel_weight`).
* atp.md §3 P.4 (DACS ClassMix, :func:`batch_class_mix_masks`): for every image, ``⌈n/2⌉`` classes drawn
  from the ``n`` unique labels of the **whole** batch (255 included when present, exactly as DACS'
  ``get_class_masks`` with ``mask_wo_ignore=False``; ATP's easy labels are teacher argmaxes, so 255 never
  occurs there); image ``mask·easy + (1 − mask)·hard``; label ``ŷ_e / ŷ_h``; weight 1 on pasted pixels and
  the hard crop's pseudo-weight map elsewhere.

Quirk switches: none. The whole-batch class pool is the behaviour atp.md §3/§7 pins ("⌈n/2⌉ batch
classes"); the per-image pool is :func:`class_mix_mask`. A method picks one of the two functions.

Randomness: every random function takes an explicit ``torch.Generator`` (drawn on the CPU; the masks are
then built on ``device``), so a seeded generator gives the same masks on any device.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from adaptseg.methods.parts.precision import full_precision

CUT_MIX_AREA = 0.4


def cut_mix_box(
    height: int, width: int, u: float, position: tuple[float, float], *, area: float = CUT_MIX_AREA
) -> tuple[int, int, int, int]:
    """The cut-mix box ``(y0, x0, y1, x1)`` (end-exclusive) for given uniform draws (ddb.md §3 "cut").

    ``u`` sets the height fraction ``h = area^u`` (so ``h ∈ [area, 1]``) and the width fraction
    ``w = area/h``; ``position = (U₁, U₂)`` places the box inside the image. Rounding is numpy's
    (half to even), as in the released ``np.round``.
    """
    h_frac = math.exp(u * math.log(area))
    w_frac = area / h_frac
    size_h = round(h_frac * height)
    size_w = round(w_frac * width)
    y0 = round((height - size_h) * position[0])
    x0 = round((width - size_w) * position[1])
    return y0, x0, y0 + size_h, x0 + size_w


def cut_mix_mask(
    height: int,
    width: int,
    generator: torch.Generator,
    *,
    area: float = CUT_MIX_AREA,
    device: torch.device | str | None = None,
) -> Tensor:
    """An H×W long mask with ``M = 1`` inside one random box of about ``area`` of the image (ddb.md §3 "cut").

    Draws ``u``, then ``(U₁, U₂)``, all U(0, 1) from ``generator``.
    """
    draws = torch.rand(3, generator=generator, dtype=torch.float64).tolist()
    y0, x0, y1, x1 = cut_mix_box(height, width, draws[0], (draws[1], draws[2]), area=area)
    mask = torch.zeros(height, width, dtype=torch.long, device=device)
    mask[y0:y1, x0:x1] = 1
    return mask


def _draw_half(classes: Tensor, generator: torch.Generator) -> Tensor:
    """``ceil(K/2)`` of the ``K`` values in ``classes``, drawn without replacement."""
    k = classes.numel()
    order = torch.randperm(k, generator=generator)[: (k + 1) // 2]
    return classes[order.to(classes.device)]


def _mask_of(label: Tensor, chosen: Tensor) -> Tensor:
    return torch.isin(label, chosen).long()


def class_mix_mask(label: Tensor, generator: torch.Generator) -> Tensor:
    """DDB class mask for one source label (H×W): ``ceil(K/2)`` of its ``K`` unique values, 255 included.

    ddb.md §3 "class": ``M = 1`` wherever the label is one of the drawn values. A drawn 255 pastes the
    source's ignore regions, which stay ignored in the mixed label.
    """
    return _mask_of(label, _draw_half(torch.unique(label), generator))


def batch_class_mix_masks(labels: Tensor, generator: torch.Generator) -> Tensor:
    """DACS ClassMix masks (N×H×W) for a batch of labels (N×H×W) (atp.md §3 P.4).

    The class pool is the ``n`` unique values of the **whole batch**; each image independently draws
    ``⌈n/2⌉`` of them and its mask is 1 where its own label is a drawn value (so an image may paste fewer
    than half of its own classes).
    """
    pool = torch.unique(labels)
    return torch.stack([_mask_of(label, _draw_half(pool, generator)) for label in labels])


def zero_mix_mask(height: int, width: int, *, device: torch.device | str | None = None) -> Tensor:
    """The all-zero mask of DDB's CKD step (ddb.md §3 "zero"): the mix is the target crop itself."""
    return torch.zeros(height, width, dtype=torch.long, device=device)


@full_precision
def mix_images(mask: Tensor, first: Tensor, second: Tensor) -> Tensor:
    """``M·first + (1 − M)·second`` for images ``…×C×H×W`` and a mask ``…×H×W`` (ddb.md §3, atp.md §3 P.4).

    Selected with ``torch.where``, so every pixel equals the chosen operand exactly.
    """
    return torch.where(mask.unsqueeze(-3).bool(), first, second)


def mix_labels(mask: Tensor, first: Tensor, second: Tensor) -> Tensor:
    """``y_m = M·first + (1 − M)·second`` for N×H×W (or H×W) labels (ddb.md §3 ST step 4)."""
    return torch.where(mask.bool(), first, second)


def mixed_pixel_weight(mask: Tensor, second_weight: float | Tensor) -> Tensor:
    """Pixel weight of a mixed crop: 1 where ``M = 1`` (labelled/easy pixels), ``second_weight`` elsewhere.

    ``second_weight`` is DDB's scalar quality weight ``q`` (ddb.md §3 ST step 4) or ATP's hard-crop
    pseudo-weight map, whose ``plcrop`` rows are 0 (atp.md §3 P.4).
    """
    ones = torch.ones(mask.shape, dtype=torch.float32, device=mask.device)
    other = torch.as_tensor(second_weight, dtype=torch.float32, device=mask.device)
    return torch.where(mask.bool(), ones, other)
