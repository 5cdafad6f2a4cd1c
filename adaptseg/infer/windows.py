"""Where the sliding windows go, and how much each window's pixels weigh when overlaps are averaged.

The grid is mmseg's ``slide_inference`` grid (``EncoderDecoder.slide_inference``, identical in mmseg
0.x and 1.x, DAFormer and HRDA): ``grids = max(size - crop + stride - 1, 0) // stride + 1`` windows per
axis, starting every ``stride`` pixels; the last window is shifted back so that it ends at the border
(``start = max(end - crop, 0)``). A crop larger than the image gives one window covering the whole
axis; the engine pads that window up to the crop and cuts the result back.
"""

from __future__ import annotations

import functools
from typing import Literal, NamedTuple

import torch

WeightKind = Literal["uniform", "gaussian"]


class Window(NamedTuple):
    """One window ``[y0:y1, x0:x1]`` of an image (half-open, pixels)."""

    y0: int
    y1: int
    x0: int
    x1: int

    @property
    def height(self) -> int:
        return self.y1 - self.y0

    @property
    def width(self) -> int:
        return self.x1 - self.x0


def axis_starts(size: int, crop: int, stride: int) -> list[tuple[int, int]]:
    """``(start, end)`` of every window along one axis of length ``size`` (mmseg's rule)."""
    if size < 1 or crop < 1 or stride < 1:
        raise ValueError(f"size, crop and stride must be positive, got {size}, {crop}, {stride}")
    grids = max(size - crop + stride - 1, 0) // stride + 1
    spans = []
    for i in range(grids):
        end = min(i * stride + crop, size)
        spans.append((max(end - crop, 0), end))
    return spans


def window_grid(height: int, width: int, crop: tuple[int, int], stride: tuple[int, int]) -> list[Window]:
    """All windows of an ``height``×``width`` image, row-major (mmseg's order).

    ``crop`` and ``stride`` are ``(h, w)``. Windows are at most ``crop`` large; they are smaller only
    along an axis where the image itself is smaller than the crop.
    """
    if stride[0] > crop[0] or stride[1] > crop[1]:
        raise ValueError(
            f"stride {tuple(stride)} larger than crop {tuple(crop)} would leave gaps between windows"
        )
    rows = axis_starts(height, crop[0], stride[0])
    cols = axis_starts(width, crop[1], stride[1])
    return [Window(y0, y1, x0, x1) for y0, y1 in rows for x0, x1 in cols]


@functools.lru_cache(maxsize=8)
def window_counts(height: int, width: int, crop: tuple[int, int], stride: tuple[int, int]) -> torch.Tensor:
    """How many windows of :func:`window_grid` cover each pixel (``height``×``width`` float32).

    The grid is every row span times every column span, so the count map is the outer product of the
    per-axis coverage counts: computed once per image size instead of accumulated window by window.
    Small integers, exact in float32. Cached per geometry; treat the result as read-only.
    """

    def coverage(size: int, crop_side: int, stride_side: int) -> torch.Tensor:
        counts = torch.zeros(size, dtype=torch.float32)
        for start, end in axis_starts(size, crop_side, stride_side):
            counts[start:end] += 1
        return counts

    rows = coverage(height, crop[0], stride[0])
    cols = coverage(width, crop[1], stride[1])
    return rows[:, None] * cols[None, :]


@functools.lru_cache(maxsize=16)
def _gaussian(height: int, width: int, sigma_scale: float) -> torch.Tensor:
    def axis(n: int) -> torch.Tensor:
        centre = (n - 1) / 2
        sigma = max(n * sigma_scale, 1e-6)
        x = torch.arange(n, dtype=torch.float64)
        return torch.exp(-0.5 * ((x - centre) / sigma) ** 2)

    w = axis(height)[:, None] * axis(width)[None, :]
    w = w / w.max()
    # Far corners of a narrow Gaussian underflow towards 0; a floor keeps every pixel covered by
    # some weight so that normalising by the summed weights never divides by ~0 (as nnU-Net does).
    return w.clamp_min(1e-3).to(torch.float32)


def window_weights(
    crop: tuple[int, int], kind: WeightKind = "uniform", *, sigma_scale: float = 0.25
) -> torch.Tensor | None:
    """The ``h×w`` weight map of one crop-sized window, or ``None`` for uniform weights (plain counts).

    Gaussian weights (centre 1, σ = ``sigma_scale`` × crop side per axis, floored at 1e-3) trust the
    middle of a window more than its borders, where the network saw less context.
    """
    if kind == "uniform":
        return None
    if kind == "gaussian":
        return _gaussian(int(crop[0]), int(crop[1]), float(sigma_scale))
    raise ValueError(f"unknown window weighting {kind!r}; choose 'uniform' or 'gaussian'")
