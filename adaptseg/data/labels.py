"""The label space: 19 Cityscapes train classes and every dataset's map into it.

Source of truth: ``shared/datasets.md`` §0 (cityscapesScripts ``labels.py``; DAFormer's converters;
DDB's Mapillary rule). All maps are 256-entry uint8 lookup tables so that ``lut[label]`` converts a
whole label image in one indexing operation; anything not in the table becomes 255 (ignore).
"""

from __future__ import annotations

import re

import numpy as np

IGNORE_INDEX = 255

CLASSES: tuple[str, ...] = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle",
    "bicycle",
)  # fmt: skip
NUM_CLASSES = len(CLASSES)

PALETTE: np.ndarray = np.array(
    [
        [128, 64, 128], [244, 35, 232], [70, 70, 70], [102, 102, 156], [190, 153, 153],
        [153, 153, 153], [250, 170, 30], [220, 220, 0], [107, 142, 35], [152, 251, 152],
        [70, 130, 180], [220, 20, 60], [255, 0, 0], [0, 0, 142], [0, 0, 70], [0, 60, 100],
        [0, 80, 100], [0, 0, 230], [119, 11, 32],
    ],
    dtype=np.uint8,
)  # fmt: skip

# Cityscapes labelIds (also GTA5 and Synscapes) -> trainId; ids not listed (0-6, 9, 10, 14-16, 18, 29, 30,
# -1 licence plate) are ignored.
CITYSCAPES_ID_TO_TRAINID: dict[int, int] = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12,
    26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}  # fmt: skip

# SYNTHIA-RAND-CITYSCAPES class ids (R channel of the 16-bit GT) -> trainId. 0 void, 13 parking-slot,
# 14 road-work, 22 lane-marking are ignored; 16 terrain, 18 truck, 20 train never occur in the data.
SYNTHIA_ID_TO_TRAINID: dict[int, int] = {
    3: 0, 4: 1, 2: 2, 21: 3, 5: 4, 7: 5, 15: 6, 9: 7, 6: 8, 16: 9, 1: 10, 10: 11, 17: 12, 8: 13,
    18: 14, 19: 15, 20: 16, 12: 17, 11: 18,
}  # fmt: skip

# Mapillary Vistas v1.2: the 66 labels in config_v1.2.json order (index = palette index in the label PNG).
MAPILLARY_V12_NAMES: tuple[str, ...] = (
    "Bird", "Ground Animal", "Curb", "Fence", "Guard Rail", "Barrier", "Wall", "Bike Lane",
    "Crosswalk - Plain", "Curb Cut", "Parking", "Pedestrian Area", "Rail Track", "Road",
    "Service Lane", "Sidewalk", "Bridge", "Building", "Tunnel", "Person", "Bicyclist", "Motorcyclist",
    "Other Rider", "Lane Marking - Crosswalk", "Lane Marking - General", "Mountain", "Sand", "Sky",
    "Snow", "Terrain", "Vegetation", "Water", "Banner", "Bench", "Bike Rack", "Billboard",
    "Catch Basin", "CCTV Camera", "Fire Hydrant", "Junction Box", "Mailbox", "Manhole", "Phone Booth",
    "Pothole", "Street Light", "Pole", "Traffic Sign Frame", "Utility Pole", "Traffic Light",
    "Traffic Sign (Back)", "Traffic Sign (Front)", "Trash Can", "Bicycle", "Boat", "Bus", "Car",
    "Caravan", "Motorcycle", "On Rails", "Other Vehicle", "Trailer", "Truck", "Wheeled Slow",
    "Car Mount", "Ego Vehicle", "Unlabeled",
)  # fmt: skip

# The 16- and 13-class SYNTHIA protocols (datasets.md §8): trainIds kept in the mean.
SYNTHIA16_CLASSES: tuple[int, ...] = tuple(c for c in range(19) if c not in (9, 14, 16))
SYNTHIA13_CLASSES: tuple[int, ...] = tuple(c for c in SYNTHIA16_CLASSES if c not in (3, 4, 5))
PROTOCOLS: dict[int, tuple[int, ...]] = {
    19: tuple(range(19)),
    16: SYNTHIA16_CLASSES,
    13: SYNTHIA13_CLASSES,
}


def _normalised(name: str) -> str:
    return re.sub(r"[\s\-]", "", name.lower())


def mapillary_name_to_trainid(name: str) -> int:
    """DDB's Mapillary v1.2 → Cityscapes rule (``tools/convert_datasets/mapillary2cityscape.py``).

    The readable name is lower-cased with spaces and '-' removed; the first matching rule wins:
    exact Cityscapes class name; traffic sign / front / back → 7; on rails → 16; cyclist / rider → 12;
    pole / street light → 5; curb / pedestrian area → 1; plain crosswalk, parking, bike lane, service
    lane, lane marking → 0; anything else is ignored.
    """
    key = _normalised(name)
    for tid, cls in enumerate(CLASSES):
        if key == _normalised(cls):
            return tid
    rules: tuple[tuple[tuple[str, ...], int], ...] = (
        (("trafficsign", "front", "back"), 7),
        (("onrail",), 16),
        (("cyclist", "rider"), 12),
        (("pole", "streetlight"), 5),
        (("curb", "pedestrianarea"), 1),
        (("crosswalkplain", "parking", "bikelane", "servicelane", "lanemarking"), 0),
    )
    for needles, tid in rules:
        if any(n in key for n in needles):
            return tid
    return IGNORE_INDEX


def lut_from_dict(mapping: dict[int, int]) -> np.ndarray:
    """A 256-entry uint8 lookup table: ``lut[id] = mapping.get(id, 255)``."""
    lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    for src, dst in mapping.items():
        if 0 <= src < 256:
            lut[src] = dst
    return lut


CITYSCAPES_LUT = lut_from_dict(CITYSCAPES_ID_TO_TRAINID)
SYNTHIA_LUT = lut_from_dict(SYNTHIA_ID_TO_TRAINID)
MAPILLARY_LUT = lut_from_dict({i: mapillary_name_to_trainid(n) for i, n in enumerate(MAPILLARY_V12_NAMES)})
IDENTITY_TRAINID_LUT = lut_from_dict({i: i for i in range(NUM_CLASSES)})

# trainId -> Cityscapes labelId (for the official evaluator and test-server submissions); 255 -> 0.
TRAINID_TO_CITYSCAPES_ID = np.zeros(256, dtype=np.uint8)
for _id, _tid in CITYSCAPES_ID_TO_TRAINID.items():
    TRAINID_TO_CITYSCAPES_ID[_tid] = _id


def trainids_to_labelids(label: np.ndarray) -> np.ndarray:
    """Convert a uint8 trainId map to Cityscapes labelIds (255 → 0 'unlabeled')."""
    return TRAINID_TO_CITYSCAPES_ID[label]


def colorize(label: np.ndarray, palette: np.ndarray = PALETTE) -> np.ndarray:
    """Palette colours (uint8 RGB H×W×3) for a trainId map; ignored pixels are black."""
    table = np.zeros((256, 3), dtype=np.uint8)
    table[: len(palette)] = palette
    return table[label]


def known_values(lut: np.ndarray) -> np.ndarray:
    """Raw label values a dataset may legitimately contain (those mapped to a class or deliberately ignored)."""
    return np.arange(256)[lut != IGNORE_INDEX]
