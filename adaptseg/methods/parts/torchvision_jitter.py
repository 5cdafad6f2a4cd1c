"""torchvision ``ColorJitter`` semantics on tensors (DecoupleNet's phase-2 jitter), per image.

Spec rule implemented here (decouplenet.md §4 "Augmentation": ``ColorJitter(brightness .5, contrast .5,
saturation .5, hue .2)`` on the crop, phase 2 only, source and target). torchvision's rules, which differ
from kornia 0.5.8's (:mod:`adaptseg.methods.parts.augment`, DACS):

* brightness multiplies by ``b ~ U(1−s, 1+s)``; contrast blends with the mean grey level of the image,
  ``c·x + (1−c)·mean(grey)``; saturation blends with the per-pixel grey, ``s·x + (1−s)·grey``
  (grey = 0.2989 R + 0.587 G + 0.114 B); every step clamps to [0, 1];
* hue shifts HSV hue by ``U(−h, h)`` of a turn;
* each image draws its own factors and its own order of the four operations (the dataset applies the
  transform per sample).

Works on ``[0, 1]`` RGB; :func:`jitter_normalized` de-normalises and re-normalises around it.
Departure: the release jitters uint8 PIL images (hue through PIL's 8-bit HSV); here floats.

Quirk switches: none.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from adaptseg.methods.parts.augment import adjust_hue, denormalize, renormalize
from adaptseg.methods.parts.precision import full_precision

GREY_WEIGHTS = (0.2989, 0.587, 0.114)
#: decouplenet.md §4: ColorJitter(0.5, 0.5, 0.5, 0.2)
DECOUPLENET_JITTER = (0.5, 0.5, 0.5, 0.2)


def grey(image01: Tensor) -> Tensor:
    """1×H×W grey level of a 3×H×W RGB image (torchvision ``rgb_to_grayscale``)."""
    r, g, b = image01.unbind(0)
    return (GREY_WEIGHTS[0] * r + GREY_WEIGHTS[1] * g + GREY_WEIGHTS[2] * b)[None]


def jitter_image(
    image01: Tensor, generator: torch.Generator, strengths: Sequence[float] = DECOUPLENET_JITTER
) -> Tensor:
    """One image (3×H×W in [0, 1]) through torchvision's ColorJitter with its own draws."""
    brightness, contrast, saturation, hue = strengths

    def factor(s: float) -> float:
        return (1 - s) + 2 * s * torch.rand((), generator=generator, dtype=torch.float64).item()

    draws = {
        0: factor(brightness),
        1: factor(contrast),
        2: factor(saturation),
        3: hue * (2 * torch.rand((), generator=generator, dtype=torch.float64).item() - 1),
    }
    out = image01
    for op in torch.randperm(4, generator=generator).tolist():
        f = draws[op]
        if op == 0:
            out = out * f
        elif op == 1:
            out = f * out + (1 - f) * grey(out).mean()
        elif op == 2:
            out = f * out + (1 - f) * grey(out)
        else:
            out = adjust_hue(out[None], torch.tensor([f * 2 * math.pi]))[0]
        out = out.clamp(0.0, 1.0)
    return out


@full_precision
def jitter_normalized(
    images: Tensor,
    generator: torch.Generator,
    mean: Sequence[float],
    std: Sequence[float],
    strengths: Sequence[float] = DECOUPLENET_JITTER,
) -> Tensor:
    """Colour-jitter normalised N×3×H×W images (each with its own draws), returning normalised images."""
    images01 = denormalize(images, mean, std)
    jittered = torch.stack([jitter_image(image, generator, strengths) for image in images01])
    return renormalize(jittered, mean, std)


__all__ = ["DECOUPLENET_JITTER", "grey", "jitter_image", "jitter_normalized"]
