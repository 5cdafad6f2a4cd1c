"""Writers for each dataset's official layout and label encoding (``shared/datasets.md`` §1–§7).

Every writer takes a dataset root, the sample's place in its split and a :class:`Sample`, and writes
exactly the files the real dataset ships, named as the real dataset names them:

* GTA5: ``images/00001.png`` + palette PNG ``labels/00001.png`` (indices = Cityscapes labelIds,
  palette = Cityscapes colours);
* SYNTHIA: ``RGB/0000000.png`` + 16-bit 3-channel ``GT/LABELS/0000000.png`` (class id in R, instance
  in G; written through OpenCV, so R is channel 2 of the BGR array);
* Synscapes: ``img/rgb/1.png`` + ``img/class/1.png`` (labelIds; 1-based, not zero-padded);
* Cityscapes: ``leftImg8bit/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png`` +
  ``gtFine/...gtFine_labelIds.png`` and ``_gtFine_instanceIds.png`` (no ``labelTrainIds``: not shipped);
* ACDC: ``rgb_anon/<cond>/<split>/<seq>/<seq>_frame_<6d>_rgb_anon.png`` + ``gt/...`` with
  ``_gt_labelTrainIds.png`` and ``_gt_labelIds.png``;
* Dark Zurich: ``rgb_anon/<split>/night/<seq>/..._rgb_anon.png``; val labels in ``gt/val/night/...``.

Writers put files into a private staging folder that :func:`~adaptseg.data.minicity.generate`
renames into place once the whole domain is written, so a crash never leaves a half-written dataset
(and single files need no fsync). PNG encoding is deterministic: the same sample gives the same bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from adaptseg.data.labels import (
    CITYSCAPES_ID_TO_TRAINID,
    CITYSCAPES_LUT,
    PALETTE,
    SYNTHIA_ID_TO_TRAINID,
)
from adaptseg.errors import UserError

#: Cities of the Cityscapes-like splits (invented, German-sounding like the real ones).
CITIES = {
    "train": ("altenbruck", "bergheide", "dornstedt", "eichenau", "falkenrode", "grunfeld"),
    "val": ("hollenbach", "lindenau", "mooswald"),
}
#: GoPro sequences of the ACDC-like conditions and the Dark-Zurich-like recordings.
ACDC_SEQUENCES = {
    ("fog", "train"): ("GOPR0475", "GOPR0476", "GOPR0477", "GOPR0478"),
    ("fog", "val"): ("GOPR0479", "GOPR0481"),
    ("night", "train"): ("GOPR0351", "GOPR0355", "GOPR0356", "GP010376"),
    ("night", "val"): ("GOPR0594", "GP010594"),
    ("rain", "train"): ("GOPR0400", "GOPR0402", "GP010400", "GP020400"),
    ("rain", "val"): ("GOPR0573", "GP010573"),
    ("snow", "train"): ("GOPR0122", "GOPR0176", "GP010176", "GOPR0177"),
    ("snow", "val"): ("GOPR0604", "GP010604"),
}
DARKZURICH_SEQUENCES = {
    "train": ("GOPR0346", "GOPR0347", "GOPR0348", "GOPR0351", "GOPR0355"),
    "val": ("GOPR0356",),
}

# Cityscapes labelId -> SYNTHIA class id (via the shared trainId); void ids become 0.
_SYNTHIA_FROM_LABELID = np.zeros(256, np.uint16)
_TRAINID_TO_SYNTHIA = {tid: sid for sid, tid in SYNTHIA_ID_TO_TRAINID.items()}
for _lid, _tid in CITYSCAPES_ID_TO_TRAINID.items():
    _SYNTHIA_FROM_LABELID[_lid] = _TRAINID_TO_SYNTHIA[_tid]
SYNTHIA_LANEMARKING = 22
_INSTANCE_LABELIDS = (24, 25, 26, 27, 28, 29, 30, 31, 32, 33)


@dataclass(frozen=True)
class Sample:
    """One rendered image with its ground truth."""

    image: np.ndarray  # uint8 RGB H×W×3
    label_ids: np.ndarray  # uint8 Cityscapes labelIds
    instances: np.ndarray  # uint16 instance ids (0 = stuff)
    lane_marks: np.ndarray  # bool: painted road markings

    @property
    def train_ids(self) -> np.ndarray:
        return CITYSCAPES_LUT[self.label_ids]


def write_png(path: Path, array: np.ndarray, *, rgb: bool = True) -> None:
    """Encode ``array`` as PNG (RGB arrays converted for OpenCV) and write it, creating folders."""
    array = np.ascontiguousarray(array)
    if rgb and array.ndim == 3:
        array = cv2.cvtColor(array, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".png", array, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise UserError("could not encode PNG", path=path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.tobytes())


def _sequence_name(names: tuple[str, ...], index: int) -> tuple[str, int]:
    """Spread consecutive indices over named recordings: (name, position within that recording)."""
    return names[index % len(names)], index // len(names)


def write_palette_png(path: Path, indices: np.ndarray, palette: np.ndarray = PALETTE) -> None:
    """An 8-bit palette PNG (PIL mode "P"): ``indices`` as stored values, Cityscapes colours as palette.

    The palette maps each Cityscapes labelId to its class colour (void ids black), as GTA5 ships it.
    """
    from PIL import Image

    table = np.zeros((256, 3), np.uint8)
    for lid, tid in CITYSCAPES_ID_TO_TRAINID.items():
        table[lid] = palette[tid]
    img = Image.fromarray(np.ascontiguousarray(indices, dtype=np.uint8), mode="P")
    img.putpalette(table.ravel().tolist())
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format="PNG")


def write_gta5(root: Path, index: int, sample: Sample) -> None:
    name = f"{index + 1:05d}.png"
    write_png(root / "images" / name, sample.image)
    write_palette_png(root / "labels" / name, sample.label_ids)


def synthia_label(sample: Sample) -> np.ndarray:
    """SYNTHIA's 16-bit GT as an OpenCV (BGR) array: B = 0, G = instance, R = class id."""
    classes = _SYNTHIA_FROM_LABELID[sample.label_ids]
    classes[sample.lane_marks] = SYNTHIA_LANEMARKING
    out = np.zeros((*classes.shape, 3), np.uint16)
    out[:, :, 2] = classes
    out[:, :, 1] = sample.instances
    return out


def write_synthia(root: Path, index: int, sample: Sample) -> None:
    name = f"{index:07d}.png"
    write_png(root / "RGB" / name, sample.image)
    write_png(root / "GT" / "LABELS" / name, synthia_label(sample), rgb=False)


def write_synscapes(root: Path, index: int, sample: Sample) -> None:
    name = f"{index + 1}.png"
    write_png(root / "img" / "rgb" / name, sample.image)
    write_png(root / "img" / "class" / name, sample.label_ids)


def cityscapes_instance_ids(sample: Sample) -> np.ndarray:
    """Cityscapes ``instanceIds``: labelId·1000 + k for countable objects, the labelId elsewhere."""
    out = sample.label_ids.astype(np.uint16)
    things = np.isin(sample.label_ids, _INSTANCE_LABELIDS) & (sample.instances > 0)
    if things.any():
        labels, inst = sample.label_ids[things].astype(np.uint32), sample.instances[things].astype(np.uint32)
        keys = labels * 65536 + inst
        uniq, inverse = np.unique(keys, return_inverse=True)
        per_class = np.zeros(len(uniq), np.uint32)  # k = rank of the instance within its class
        uniq_labels = uniq // 65536
        for lid in np.unique(uniq_labels):
            sel = uniq_labels == lid
            per_class[sel] = np.arange(sel.sum())
        out[things] = (labels * 1000 + per_class[inverse]).astype(np.uint16)
    return out


def cityscapes_stem(split: str, index: int) -> tuple[str, str]:
    """(city, stem) of the ``index``-th image of a Cityscapes-like split, e.g. ``altenbruck_000002_000019``."""
    city, seq = _sequence_name(CITIES[split], index)
    return city, f"{city}_{seq:06d}_000019"


def write_cityscapes(root: Path, split: str, index: int, sample: Sample) -> None:
    city, stem = cityscapes_stem(split, index)
    write_png(root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png", sample.image)
    gt = root / "gtFine" / split / city
    write_png(gt / f"{stem}_gtFine_labelIds.png", sample.label_ids)
    write_png(gt / f"{stem}_gtFine_instanceIds.png", cityscapes_instance_ids(sample))


def gopro_stem(names: tuple[str, ...], index: int) -> tuple[str, str]:
    """(sequence, stem) of a GoPro frame, e.g. ``GOPR0475_frame_000041``."""
    seq, pos = _sequence_name(names, index)
    return seq, f"{seq}_frame_{41 + 37 * pos:06d}"


def write_acdc(root: Path, condition: str, split: str, index: int, sample: Sample) -> None:
    seq, stem = gopro_stem(ACDC_SEQUENCES[(condition, split)], index)
    write_png(root / "rgb_anon" / condition / split / seq / f"{stem}_rgb_anon.png", sample.image)
    gt = root / "gt" / condition / split / seq
    write_png(gt / f"{stem}_gt_labelTrainIds.png", sample.train_ids)
    write_png(gt / f"{stem}_gt_labelIds.png", sample.label_ids)


def write_darkzurich(root: Path, split: str, index: int, sample: Sample) -> None:
    seq, stem = gopro_stem(DARKZURICH_SEQUENCES[split], index)
    write_png(root / "rgb_anon" / split / "night" / seq / f"{stem}_rgb_anon.png", sample.image)
    if split == "val":
        write_png(root / "gt" / "val" / "night" / seq / f"{stem}_gt_labelTrainIds.png", sample.train_ids)
