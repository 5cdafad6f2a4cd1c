"""What ``adaptseg infer`` writes per image: trainId, palette colour, overlay and confidence PNGs.

An output folder holds one sub-folder per kind, mirroring the input folder's relative paths (names:
:func:`adaptseg.infer.run.output_names`)::

    OUT/label/<rel>.png        uint8 trainIds (what `adaptseg eval --pred` reads)
    OUT/colour/<rel>.png       Cityscapes palette colours           (--colour)
    OUT/overlay/<rel>.png      image blended with the colours       (--overlay)
    OUT/confidence/<rel>.png   uint8 round(255 × max probability)   (--confidence)

Every file is written atomically (:func:`adaptseg.io.write_png`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from adaptseg.data.labels import PALETTE, colorize
from adaptseg.errors import os_errors_as_user_errors
from adaptseg.infer.store import quantise
from adaptseg.io import write_png

KINDS: tuple[str, ...] = ("label", "colour", "overlay", "confidence")


def overlay(
    image: np.ndarray, label: np.ndarray, alpha: float = 0.5, palette: np.ndarray = PALETTE
) -> np.ndarray:
    """``image`` blended with the palette colours of ``label`` (``alpha`` = weight of the colours)."""
    colours = colorize(label, palette).astype(np.float32)
    blended = (1.0 - alpha) * image.astype(np.float32) + alpha * colours
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)


class PredictionWriter:
    """Writes the requested kinds of output for each image under ``out``.

    ``kinds`` is a subset of :data:`KINDS`; ``label`` is always written.
    """

    def __init__(self, out: str | Path, kinds: Sequence[str] = ("label",), *, palette: np.ndarray = PALETTE):
        unknown = set(kinds) - set(KINDS)
        if unknown:
            raise ValueError(f"unknown output kinds {sorted(unknown)}; choose from {KINDS}")
        self.out = Path(out)
        self.kinds = tuple(k for k in KINDS if k in kinds or k == "label")
        self.palette = palette

    def path(self, kind: str, name: str | Path) -> Path:
        """Where output ``kind`` named ``name`` (relative, without ``.png``) goes: ``OUT/kind/name.png``."""
        return self.out / kind / f"{name}.png"

    def write(
        self,
        name: str | Path,
        label: np.ndarray,
        confidence: np.ndarray | None = None,
        image: np.ndarray | None = None,
    ) -> list[Path]:
        """Write every requested kind for the image whose output is named ``name``; returns the paths.

        A file-system error (no permission, no space left) is a :class:`UserError` naming the file.

        ``confidence`` (H×W float in [0, 1]) is needed for ``confidence``; ``image`` (uint8 RGB) for
        ``overlay``.
        """
        written = []
        for kind in self.kinds:
            path = self.path(kind, name)
            with os_errors_as_user_errors(path):
                write_png(path, self._image(kind, label, confidence, image))
            written.append(path)
        return written

    def _image(
        self, kind: str, label: np.ndarray, confidence: np.ndarray | None, image: np.ndarray | None
    ) -> np.ndarray:
        if kind == "colour":
            return colorize(label, self.palette)
        if kind == "overlay":
            if image is None:
                raise ValueError("the overlay needs the input image")
            return overlay(image, label, palette=self.palette)
        if kind == "confidence":
            if confidence is None:
                raise ValueError("the confidence map needs the probabilities")
            return quantise(confidence)
        return label.astype(np.uint8, copy=False)
