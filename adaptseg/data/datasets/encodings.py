"""How each dataset stores its labels on disk, and how the stored values become trainIds.

A :class:`LabelEncoding` bundles the reader that returns the *raw* stored values (palette indices,
labelIds, the R channel of SYNTHIA's 16-bit PNGs, shipped trainIds), the lookup table into the 19
trainIds, and the raw values that are legitimate for that encoding (``data check`` flags any other
value). Source: ``shared/datasets.md`` §0–§7 and the pitfalls in §10.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from adaptseg.data.labels import (
    CITYSCAPES_LUT,
    IDENTITY_TRAINID_LUT,
    IGNORE_INDEX,
    MAPILLARY_LUT,
    MAPILLARY_V12_NAMES,
    NUM_CLASSES,
    SYNTHIA_LUT,
)
from adaptseg.errors import UserError
from adaptseg.io import read_label, read_palette_indices, read_raw


def apply_lut(lut: np.ndarray, raw: np.ndarray) -> np.ndarray:
    """Map raw label values through a 256-entry LUT; values outside 0–255 (16-bit inputs) become 255.

    The cast to uint8 happens only after the mapping (datasets.md §10), so a 16-bit value such as 259
    can never wrap around onto a real class.
    """
    if raw.dtype == np.uint8:
        return lut[raw]
    out = np.full(raw.shape, IGNORE_INDEX, dtype=np.uint8)
    inside = (raw >= 0) & (raw < lut.shape[0])
    out[inside] = lut[raw[inside].astype(np.intp)]
    return out


def read_synthia_classes(path: str | Path) -> np.ndarray:
    """The class channel of a SYNTHIA ``GT/LABELS`` PNG: 16-bit, 3 channels, class in R (datasets.md §3).

    OpenCV returns BGR, so R is channel 2; Pillow cannot decode these files. Returned as stored (uint16).
    """
    raw = read_raw(path)
    if raw.ndim != 3 or raw.shape[2] < 3:
        channels = 1 if raw.ndim == 2 else raw.shape[2]
        raise UserError(
            f"expected a 3-channel SYNTHIA label PNG (class in R), got {channels} channel(s)",
            path=path,
            fix="use RAND_CITYSCAPES/GT/LABELS/*.png from the official archive, not a converted file",
        )
    return raw[:, :, 2]


@dataclass(frozen=True, eq=False)
class LabelEncoding:
    """One way of storing labels: reader of the raw values, LUT to trainIds, the legitimate raw values."""

    name: str
    read: Callable[[str | Path], np.ndarray]
    lut: np.ndarray
    known_raw_values: np.ndarray

    def to_trainids(self, raw: np.ndarray) -> np.ndarray:
        """uint8 trainIds (255 = ignore) for an array of raw stored values."""
        return apply_lut(self.lut, raw)

    def unknown_values(self, raw: np.ndarray) -> list[int]:
        """The raw values in ``raw`` that this encoding does not define (sorted; empty for a clean label).

        Called on every label read (training, evaluation, ``data check``), so 8-bit labels are counted
        with one ``bincount`` instead of sorting every pixel.
        """
        if raw.dtype == np.uint8:
            present = np.flatnonzero(np.bincount(raw.ravel(), minlength=256))
        else:
            present = np.unique(raw)
        return [int(v) for v in np.setdiff1d(present, self.known_raw_values)]


_TRAINID_VALUES = np.append(np.arange(NUM_CLASSES), IGNORE_INDEX)

#: Cityscapes ``*_gtFine_labelIds.png`` (also Synscapes ``img/class``): grey uint8 labelIds 0–33.
CITYSCAPES_LABELIDS = LabelEncoding("cityscapes-labelIds", read_label, CITYSCAPES_LUT, np.arange(34))
#: GTA5 ``labels/NNNNN.png``: 8-bit palette PNG whose indices are Cityscapes labelIds.
GTA5_PALETTE = LabelEncoding("gta5-palette", read_palette_indices, CITYSCAPES_LUT, np.arange(34))
#: SYNTHIA ``GT/LABELS``: class ids 0–22 in the R channel of a 16-bit PNG.
SYNTHIA_16BIT = LabelEncoding("synthia-16bit", read_synthia_classes, SYNTHIA_LUT, np.arange(23))
#: Mapillary Vistas v1.2 ``labels/<key>.png``: palette indices 0–65 in config_v1.2.json order.
MAPILLARY_PALETTE = LabelEncoding(
    "mapillary-v1.2-palette", read_palette_indices, MAPILLARY_LUT, np.arange(len(MAPILLARY_V12_NAMES))
)
#: Shipped or pre-converted ``*_labelTrainIds.png``: grey uint8 trainIds 0–18 and 255.
TRAINIDS = LabelEncoding("trainIds", read_label, IDENTITY_TRAINID_LUT, _TRAINID_VALUES)

ENCODINGS: dict[str, LabelEncoding] = {
    e.name: e for e in (CITYSCAPES_LABELIDS, GTA5_PALETTE, SYNTHIA_16BIT, MAPILLARY_PALETTE, TRAINIDS)
}
