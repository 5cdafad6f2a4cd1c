"""One random resize → crop → flip, applied identically to an image, its soft labels and a model's prediction.

Spec rules implemented here (decouplenet.md §3 "Phase 2", §4 "Augmentation", §7.4):

* :func:`sample_random_sized_crop` draws the release's ``RandomSized`` + ``RandomCrop`` + flip for one image:
  ``w = int(U(0.5, 1.5)·base_width)``, ``h = int(w / aspect)`` (2200 px for Cityscapes' 2048×1024), a crop
  offset uniform over the valid range (top ``y1``, then left ``x1``), then a flip with p = 0.5. A resized side
  smaller than the crop is raised to the crop (the release never meets it at its sizes).
* :func:`warp_to_crop` applies a drawn :class:`CropGeometry` to a C×H×W map: bilinear resize to ``(h, w)``,
  ``[y1:y1+ch, x1:x1+cw]``, then ``flip(-1)``. Images use ``align_corners=False`` (an image resize); soft
  labels and predictions ``align_corners=True`` as the release interpolates them.

Quirk switches: none.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

RANDOM_SIZED_WIDTH = 2200
RANDOM_SIZED_RANGE = (0.5, 1.5)
FLIP_PROBABILITY = 0.5


@dataclass(frozen=True)
class CropGeometry:
    """Resize to ``size`` = (h, w), crop ``crop`` = (ch, cw) at (``top``, ``left``), then flip if ``flip``."""

    size: tuple[int, int]
    top: int
    left: int
    crop: tuple[int, int]
    flip: bool

    @property
    def box(self) -> tuple[int, int, int, int]:
        """``(y1, y2, x1, x2)`` of the crop in the resized image (end-exclusive)."""
        return self.top, self.top + self.crop[0], self.left, self.left + self.crop[1]


def sample_random_sized_crop(
    height: int,
    width: int,
    crop: tuple[int, int],
    generator: torch.Generator,
    *,
    base_width: int = RANDOM_SIZED_WIDTH,
    scale_range: tuple[float, float] = RANDOM_SIZED_RANGE,
    flip_probability: float = FLIP_PROBABILITY,
) -> CropGeometry:
    """Draw one ``RandomSized`` resize, crop offset and flip for an image of ``height × width``."""
    low, high = scale_range
    ratio = low + (high - low) * torch.rand((), generator=generator, dtype=torch.float64).item()
    w = int(ratio * base_width)
    h = int(w / (width / height))
    h, w = max(h, crop[0]), max(w, crop[1])
    top = int(torch.randint(0, h - crop[0] + 1, (), generator=generator))
    left = int(torch.randint(0, w - crop[1] + 1, (), generator=generator))
    flip = torch.rand((), generator=generator, dtype=torch.float64).item() < flip_probability
    return CropGeometry((h, w), top, left, tuple(crop), flip)


def warp_to_crop(x: Tensor, geometry: CropGeometry, *, align_corners: bool) -> Tensor:
    """A C×H×W map resized to ``geometry.size`` (bilinear), cropped to its box and flipped as drawn."""
    resized = F.interpolate(
        x[None].float(), size=geometry.size, mode="bilinear", align_corners=align_corners
    )[0]
    y1, y2, x1, x2 = geometry.box
    out = resized[:, y1:y2, x1:x2]
    return out.flip(-1) if geometry.flip else out


__all__ = ["CropGeometry", "sample_random_sized_crop", "warp_to_crop"]
