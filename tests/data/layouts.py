"""Miniature dataset trees in the official layouts and encodings (shared/datasets.md §1–§7).

Each ``make_*`` builds a tiny tree under ``root`` with real files — palette PNGs written by Pillow,
SYNTHIA's 16-bit 3-channel PNGs with the class in R, shipped ``*_labelTrainIds.png`` — plus the
neighbouring files a real tree has (colour maps, instance maps, reference images, converter outputs)
that a reader must not pick up. Labels hold hand-set values in their first pixels (row-major, see
:func:`grid`); the tests state the trainIds those values must become.
"""

from __future__ import annotations

import base64
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from adaptseg.data.labels import PALETTE
from adaptseg.io import write_bytes_atomic, write_png

H, W = 4, 6

# Raw values at the first pixels of each dataset's labels; the rest of the label holds the first value.
CITYSCAPES_IDS = [7, 8, 26, 33, 0, 6, 31, 23]  # trainIds 0 1 13 18 255 255 16 10
GTA5_IDS = [7, 11, 24, 28, 3, 32, 20, 21]  # trainIds 0 2 11 15 255 17 7 8
SYNTHIA_IDS = [3, 4, 21, 8, 0, 22, 12, 1]  # trainIds 0 1 3 13 255 255 17 10
MAPILLARY_IDS = [13, 15, 55, 50, 65, 20, 58, 45]  # trainIds 0 1 13 7 255 12 16 5
TRAINIDS = [0, 5, 10, 18, 255, 11, 12, 13]

# scipy.io.savemat({"trainIds": [[1], [3]], "valIds": [[2]], "testIds": [[4], [5]]}, do_compression=True),
# as float64 column vectors the way cycada's split.mat holds 1-based ids (written once with SciPy 1.17).
GTA5_SPLIT_MAT = base64.b64decode(
    "TUFUTEFCIDUuMCBNQVQtZmlsZSBQbGF0Zm9ybTogcG9zaXgsIENyZWF0ZWQgb246IE1vbiBOb3YgMjMgMTk6MTQ6MzEgMjAy"
    "NgAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAABSU0PAAAAMgAAAHic42NgYPAA"
    "YjYg5oDSIMAK5TMBMSMUg/glRYmZeZ4pxZxAtgADDHywh9AcDgCOmgVSDwAAACkAAAB4nONjYGBwAGI2IOaA0iDACuUzImGQ"
    "XFlijmdKMQMDJ1QeChwAUeEDLQ8AAAAzAAAAeJzjY2Bg8ABiNiDmgNIgwArlMwExIxSzA3FJanGJZ0oxAyeQLcAAAwIOEFrE"
    "AQB8twQg"
)


def grid(values: list[int], *, shape: tuple[int, int] = (H, W), dtype=np.uint8) -> np.ndarray:
    """A label whose first pixels (row-major) hold ``values``; every other pixel holds ``values[0]``."""
    label = np.full(shape, values[0], dtype=dtype)
    label.flat[: len(values)] = values
    return label


def rgb(seed: int, shape: tuple[int, int] = (H, W)) -> np.ndarray:
    """A deterministic uint8 RGB image (distinct per seed, so pairing mistakes show)."""
    return np.random.default_rng(seed).integers(0, 256, (*shape, 3), dtype=np.uint8)


def write_palette_png(path: Path, indices: np.ndarray, palette: np.ndarray = PALETTE) -> None:
    """An 8-bit palette PNG (PIL mode "P") whose pixel values are ``indices``, as GTA5/Mapillary ship."""
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(indices.astype(np.uint8), mode="P")
    flat = np.zeros((256, 3), dtype=np.uint8)
    flat[: len(palette)] = palette
    img.putpalette(flat.ravel().tolist())
    img.save(path)


def write_synthia_label(path: Path, classes: np.ndarray, instances: np.ndarray | None = None) -> None:
    """A SYNTHIA GT/LABELS PNG: uint16, 3 channels, class in R, instance in G (OpenCV writes BGR)."""
    bgr = np.zeros((*classes.shape, 3), dtype=np.uint16)
    bgr[:, :, 2] = classes
    bgr[:, :, 1] = instances if instances is not None else 0
    write_png(path, bgr, rgb=False)


def write_jpeg(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    assert ok
    write_bytes_atomic(path, buf.tobytes())


# --- Cityscapes (§1) ------------------------------------------------------------------------------

CITYSCAPES_TRAIN = [
    "aachen/aachen_000000_000019",
    "aachen/aachen_000001_000019",
    "bochum/bochum_000000_000313",
]
CITYSCAPES_VAL = ["frankfurt/frankfurt_000000_000294"]
CITYSCAPES_TEST = ["berlin/berlin_000000_000019", "bielefeld/bielefeld_000000_000321"]


def make_cityscapes(root: Path) -> Path:
    """3 train (the last with only a pre-converted labelTrainIds file), 1 val, 2 test (dummy gtFine)."""
    for split, ids in (("train", CITYSCAPES_TRAIN), ("val", CITYSCAPES_VAL), ("test", CITYSCAPES_TEST)):
        for n, key in enumerate(ids):
            write_png(root / "leftImg8bit" / split / f"{key}_leftImg8bit.png", rgb(n))
            gt = root / "gtFine" / split / key
            if split == "train" and n == 2:
                write_png(f"{gt}_gtFine_labelTrainIds.png", grid(TRAINIDS))
                continue
            ids_ = CITYSCAPES_IDS if split != "test" else [0]
            write_png(f"{gt}_gtFine_labelIds.png", grid(ids_))
            write_png(f"{gt}_gtFine_instanceIds.png", grid([26001, 24000], dtype=np.uint16))
            write_png(f"{gt}_gtFine_color.png", rgb(100 + n))
            Path(f"{gt}_gtFine_polygons.json").write_text("{}")
    return root


# --- GTA5 (§2) ------------------------------------------------------------------------------------


def make_gta5(root: Path, *, split_mat: bool = True, size_pitfall: bool = True) -> Path:
    """5 frames; 00003's label is twice the image size (the §10 pitfall); converter outputs beside them."""
    for n in range(1, 6):
        write_png(root / "images" / f"{n:05d}.png", rgb(n))
        ids = np.roll(GTA5_IDS, n - 1).tolist()
        label = grid(ids)
        if n == 3 and size_pitfall:
            label = cv2.resize(label, (2 * W, 2 * H), interpolation=cv2.INTER_NEAREST)
        write_palette_png(root / "labels" / f"{n:05d}.png", label)
        write_png(root / "labels" / f"{n:05d}_labelTrainIds.png", grid([n]))  # a converter's output
    if split_mat:
        write_bytes_atomic(root / "split.mat", GTA5_SPLIT_MAT)
    return root


# --- SYNTHIA (§3) ---------------------------------------------------------------------------------


def make_synthia(root: Path) -> Path:
    """``RAND_CITYSCAPES/`` with 2 frames; G holds instance ids that would map to classes if misread."""
    base = root / "RAND_CITYSCAPES"
    for n in range(2):
        name = f"{n:07d}.png"
        write_png(base / "RGB" / name, rgb(n, (H, W)))
        classes = grid(np.roll(SYNTHIA_IDS, n).tolist(), dtype=np.uint16)
        write_synthia_label(base / "GT" / "LABELS" / name, classes, instances=np.full((H, W), 8, np.uint16))
        write_png(base / "GT" / "COLOR" / name, rgb(50 + n))
        write_png(base / "GT" / "LABELS" / f"{n:07d}_labelTrainIds.png", grid([7]))  # a converter's output
    return root


# --- Synscapes (§4) -------------------------------------------------------------------------------

SYNSCAPES_FRAMES = [1, 2, 10]


def make_synscapes(root: Path) -> Path:
    """Frames 1, 2, 10 (unpadded: sorted as text 10 < 2); frame n's label starts with labelId 7+n."""
    for n in SYNSCAPES_FRAMES:
        write_png(root / "img" / "rgb" / f"{n}.png", rgb(n))
        write_png(root / "img" / "rgb-2k" / f"{n}.png", rgb(n, (2 * H, 2 * W)))
        write_png(root / "img" / "class" / f"{n}.png", grid([7 + n, *CITYSCAPES_IDS[1:]]))
        write_png(root / "img" / "class" / f"{n}_gt_labelTrainIds.png", grid([18]))  # DDB's output
        write_png(root / "img" / "class" / f"{n}_gt_color.png", rgb(n))
        (root / "meta").mkdir(exist_ok=True)
        (root / "meta" / f"{n}.json").write_text("{}")
    return root


# --- Mapillary Vistas (§5) ------------------------------------------------------------------------

MAPILLARY_TRAIN = ["-0C1J9CvgFP4BTVLXNeNZA", "zzYa3OBUe_aHXj7pOKsA8Q"]
MAPILLARY_VAL = ["0Aq4Wr5pv1GtrrSAn8-f5w"]


def make_mapillary(root: Path) -> Path:
    """v2.0-package layout for training (``v1.2/labels``), the old ``labels/`` layout for validation.

    Training also carries ``v2.0/labels`` with other values: they must never be read.
    """
    for n, key in enumerate(MAPILLARY_TRAIN):
        write_jpeg(root / "training" / "images" / f"{key}.jpg", rgb(n, (H + n, W)))  # sizes differ
        write_palette_png(
            root / "training" / "v1.2" / "labels" / f"{key}.png", grid(MAPILLARY_IDS, shape=(H + n, W))
        )
        write_palette_png(root / "training" / "v2.0" / "labels" / f"{key}.png", grid([0], shape=(H + n, W)))
    for key in MAPILLARY_VAL:
        write_jpeg(root / "validation" / "images" / f"{key}.jpg", rgb(9))
        write_palette_png(root / "validation" / "labels" / f"{key}.png", grid(MAPILLARY_IDS[::-1]))
    write_jpeg(root / "testing" / "images" / "Xy4Jvq0pIyLAAnqzZsB7jg.jpg", rgb(3))
    (root / "config_v1.2.json").write_text("{}")
    return root


# --- ACDC (§6) ------------------------------------------------------------------------------------

ACDC_SEQS = {"fog": "GOPR0475", "night": "GOPR0351", "rain": "GOPR0402", "snow": "GP010122"}


def acdc_id(cond: str, n: int) -> str:
    seq = ACDC_SEQS[cond]
    return f"{cond}/{seq}/{seq}_frame_{n:06d}"


def make_acdc(root: Path) -> Path:
    """Per condition: train 2, val 1, test 1, plus ``<split>_ref`` images; night train has 3.

    Labels ship as trainIds (starting with the condition's index) *and* labelIds of all 0: the
    shipped trainIds must win. Colour and invalid-region maps sit beside them.
    """
    for c, cond in enumerate(ACDC_SEQS):
        counts = {"train": 3 if cond == "night" else 2, "val": 1, "test": 1}
        for split, count in counts.items():
            for n in range(count):
                key = acdc_id(cond, 41 + n)
                _, seq, stem = key.split("/")
                write_png(root / "rgb_anon" / cond / split / seq / f"{stem}_rgb_anon.png", rgb(c * 10 + n))
                ref = root / "rgb_anon" / cond / f"{split}_ref" / seq / f"{stem}_rgb_ref_anon.png"
                write_png(ref, rgb(99))
                if split == "test":
                    continue
                gt = root / "gt" / cond / split / seq
                write_png(gt / f"{stem}_gt_labelTrainIds.png", grid([c, *TRAINIDS[1:]]))
                write_png(gt / f"{stem}_gt_labelIds.png", grid([0]))
                write_png(gt / f"{stem}_gt_labelColor.png", rgb(7))
                write_png(gt / f"{stem}_gt_invIds.png", grid([1]))
    return root


# --- Dark Zurich (§7) -----------------------------------------------------------------------------

DZ_TRAIN = {"night": ["GOPR0351/GOPR0351_frame_000001", "GOPR0351/GOPR0351_frame_000002"],
            "twilight": ["GOPR0354/GOPR0354_frame_000010"], "day": ["GOPR0400/GOPR0400_frame_000005"]}  # fmt: skip
DZ_VAL = ["GOPR0356/GOPR0356_frame_000321", "GOPR0356/GOPR0356_frame_000322"]
DZ_TEST = ["GOPR0364/GOPR0364_frame_000001"]


def make_darkzurich(root: Path) -> Path:
    """Train night 2 / twilight 1 / day 1 (no labels), val 2 with trainIds, test 1; refs beside them."""
    for time, keys in DZ_TRAIN.items():
        for n, key in enumerate(keys):
            write_png(root / "rgb_anon" / "train" / time / f"{key}_rgb_anon.png", rgb(n))
    for n, key in enumerate(DZ_VAL):
        write_png(root / "rgb_anon" / "val" / "night" / f"{key}_rgb_anon.png", rgb(20 + n))
        seq, stem = key.split("/")
        write_png(root / "rgb_anon" / "val_ref" / "day" / f"{seq}_ref" / f"{stem}_ref_rgb_anon.png", rgb(5))
        write_png(root / "gt" / "val" / "night" / f"{key}_gt_labelTrainIds.png", grid([n, *TRAINIDS[1:]]))
        write_png(root / "gt" / "val" / "night" / f"{key}_gt_labelColor.png", rgb(6))
    for key in DZ_TEST:
        write_png(root / "rgb_anon" / "test" / "night" / f"{key}_rgb_anon.png", rgb(30))
    return root


BUILDERS = {
    "cityscapes": make_cityscapes,
    "gta5": make_gta5,
    "synthia": make_synthia,
    "synscapes": make_synscapes,
    "mapillary": make_mapillary,
    "acdc": make_acdc,
    "darkzurich": make_darkzurich,
}
