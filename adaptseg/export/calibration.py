"""Real crops for export: parity checks and TensorRT int8 calibration both run on target-domain images.

Images come from ``--calib DIR`` (any folder of images, e.g. real Cityscapes ``leftImg8bit/val``) or,
by default, from MiniCity's Cityscapes-like target domain rendered in memory (no files, no downloads). Each
image gives one crop of the artifact's size: scaled up (keeping its ratio) until it covers the crop,
then cut at the centre — so every crop is real content at the size the artifact runs.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from pathlib import Path

import cv2
import numpy as np
import torch

from adaptseg.errors import UserError
from adaptseg.io import list_images, read_image

#: MiniCity's target domain (the Cityscapes-like one) and the size it is generated at
MINICITY_DOMAIN = "cityscapes"
MINICITY_SIZE = (128, 256)

ImageLike = np.ndarray | str | Path


def calibration_sources(calib: str | Path | None, count: int) -> list[ImageLike]:
    """``count`` images (cycled when a folder has fewer) from ``calib``, or MiniCity target images."""
    if calib is not None:
        paths = list_images(calib)
        if not paths:
            raise UserError(
                "no images in the calibration folder", path=calib, fix="pass a folder of target images"
            )
        return [paths[i % len(paths)] for i in range(count)]
    return list(minicity_images(count))


def calibration_split(
    calib: str | Path | None, calibration: int, parity: int
) -> tuple[list[ImageLike], list[ImageLike]]:
    """``calibration`` images to quantise with and ``parity`` *other* images to check the result on.

    An int8 model is judged on images that did not set its ranges. MiniCity renders as many distinct
    images as asked; a ``--calib`` folder gives its last ``parity`` images to the check and cycles the
    rest for calibration, so it needs at least ``parity + 1`` images.
    """
    if calib is None:
        images = minicity_images(calibration + parity)
        return list(images[:calibration]), list(images[calibration:])
    paths = list_images(calib)
    if len(paths) <= parity:
        raise UserError(
            f"int8 needs calibration images and {parity} other images to check parity on, "
            f"but the calibration folder has {len(paths)}",
            path=calib,
            fix=f"put at least {parity + 1} target images in it (or lower parity.images in the export profile)",
        )
    rest, checked = paths[: len(paths) - parity], paths[len(paths) - parity :]
    return [rest[i % len(rest)] for i in range(calibration)], list(checked)


def minicity_images(count: int, size: tuple[int, int] = MINICITY_SIZE, seed: int = 6) -> list[np.ndarray]:
    """``count`` MiniCity target-domain (Cityscapes-like val) images, RGB uint8, rendered in memory."""
    from adaptseg.data.minicity import SPECS, make_sample

    split = next(sp for sp in SPECS[MINICITY_DOMAIN].splits if sp.split == "val")
    return [make_sample(MINICITY_DOMAIN, split, i, seed=seed, size=size).image for i in range(count)]


def center_crop(image: np.ndarray, crop: tuple[int, int]) -> np.ndarray:
    """The centre ``crop`` = (h, w) of an RGB image, after a keep-ratio upscale when it is smaller."""
    h, w = image.shape[:2]
    scale = max(crop[0] / h, crop[1] / w, 1.0)
    if scale > 1.0:
        size = (max(math.ceil(w * scale), crop[1]), max(math.ceil(h * scale), crop[0]))
        image = cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)
        h, w = image.shape[:2]
    y0, x0 = (h - crop[0]) // 2, (w - crop[1]) // 2
    return image[y0 : y0 + crop[0], x0 : x0 + crop[1]]


def _load(source: ImageLike) -> np.ndarray:
    return source if isinstance(source, np.ndarray) else read_image(source)


def to_batch(images: Sequence[np.ndarray]) -> np.ndarray:
    """RGB uint8 H×W×3 crops → float32 N×3×H×W 0–255 (the deploy contract's input)."""
    return np.ascontiguousarray(np.stack(images).transpose(0, 3, 1, 2), dtype=np.float32)


def parity_crops(sources: Sequence[ImageLike], crop: tuple[int, int]) -> torch.Tensor:
    """One centre crop per image as a float32 N×3×h×w tensor."""
    return torch.from_numpy(to_batch([center_crop(_load(s), crop) for s in sources]))


class CropBatches:
    """Fixed-size float32 N×3×h×w batches of centre crops, read lazily one batch at a time.

    What TensorRT's int8 calibrator feeds the builder (its ``get_batch`` asks for exactly
    ``batch_size`` crops each call). ``len()`` is ``ceil(images / batch_size)``; a last, partial batch
    is filled by cycling from the first images so no image is left out. :meth:`next_batch` is the
    calibrator's stateful view (``None`` when done); iterating restarts from the beginning.
    """

    def __init__(self, sources: Sequence[ImageLike], crop: tuple[int, int], batch_size: int):
        if not sources:
            raise UserError("no calibration images", fix="pass --calib DIR with target-domain images")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.sources = list(sources)
        self.crop = (int(crop[0]), int(crop[1]))
        self.batch_size = int(batch_size)
        self._next = 0

    def __len__(self) -> int:
        return math.ceil(len(self.sources) / self.batch_size)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (self.batch_size, 3, *self.crop)

    def batch(self, index: int) -> np.ndarray:
        """Batch ``index`` (0-based) as a contiguous float32 array of :attr:`shape`."""
        if not 0 <= index < len(self):
            raise IndexError(f"batch {index} out of range for {len(self)} batches")
        start = index * self.batch_size
        picks = [self.sources[(start + i) % len(self.sources)] for i in range(self.batch_size)]
        return to_batch([center_crop(_load(s), self.crop) for s in picks])

    def __iter__(self) -> Iterator[np.ndarray]:
        for index in range(len(self)):
            yield self.batch(index)

    def next_batch(self) -> np.ndarray | None:
        """The next batch of a calibration pass, or ``None`` once every batch was given."""
        if self._next >= len(self):
            return None
        self._next += 1
        return self.batch(self._next - 1)

    def reset(self) -> None:
        self._next = 0
