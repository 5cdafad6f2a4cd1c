"""UMMA's label settings as one table, and the label maps between trainIds and a source's local ids.

umma.md §1 (``utils.get_label_mappings`` of the release). Each source owns a class set L_s ⊆ {0..18}:
owned classes get local ids 1..|L_s| in increasing trainId order and local 0 is "others" (every class the
source does not own); setting ``f`` owns all 19 and has no "others" channel (identity map).

Two remaps of a 19-class label map (umma.md §2 stage 0, §3 notation, §6.3):

* stage 0 (:func:`stage0_target`) — the source's own ground truth: in p/n **void (255) becomes 0 too**
  ("others"), because the release's mapped tensor starts at zeros; in f, 255 stays ignored;
* stages 1–2 (:func:`adaptation_target`) — the pseudo-labels: 255 stays ignored, other sources' classes
  become 0 ("others" is trained on the target).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from adaptseg.data.labels import CLASSES, IGNORE_INDEX
from adaptseg.errors import UserError
from adaptseg.models.union import NUM_CLASSES, unowned_classes

Setting = Literal["f", "p", "n"]
SOURCES = ("gta5", "synscapes", "synthia")
SETTINGS: tuple[Setting, ...] = ("f", "p", "n")


def _classes(*spans: int | tuple[int, int]) -> tuple[int, ...]:
    """Classes from single ids and inclusive ``(first, last)`` spans."""
    out: list[int] = []
    for span in spans:
        out += list(range(span[0], span[1] + 1)) if isinstance(span, tuple) else [span]
    return tuple(sorted(out))


ALL = _classes((0, 18))
#: p: SYNTHIA owns no terrain/car/truck/bus/train; a non-SYNTHIA source beside it owns no person/rider/moto/bike
SYNTHIA_P = _classes((0, 8), 10, 11, 12, 17, 18)
OTHER_P = _classes((0, 10), (13, 16))

#: umma.md §1, one row per (setting, sources as a sorted tuple): the classes each source owns
LABEL_SETS: dict[tuple[str, tuple[str, ...]], dict[str, tuple[int, ...]]] = {
    ("p", ("gta5", "synscapes")): {"synscapes": OTHER_P, "gta5": _classes((0, 12), 17, 18)},
    ("p", ("gta5", "synthia")): {"synthia": SYNTHIA_P, "gta5": OTHER_P},
    ("p", ("synscapes", "synthia")): {"synthia": SYNTHIA_P, "synscapes": OTHER_P},
    ("p", ("gta5", "synscapes", "synthia")): {"synthia": SYNTHIA_P, "gta5": OTHER_P, "synscapes": OTHER_P},
    ("n", ("gta5", "synscapes")): {"gta5": _classes((0, 10)), "synscapes": _classes((11, 18))},
    ("n", ("gta5", "synthia")): {"synthia": _classes((0, 8), 10), "gta5": _classes(9, (11, 18))},
    ("n", ("synscapes", "synthia")): {"synthia": _classes((0, 8), 10), "synscapes": _classes(9, (11, 18))},
    ("n", ("gta5", "synscapes", "synthia")): {
        "gta5": _classes((0, 10)),
        "synscapes": _classes((13, 16)),
        "synthia": _classes(11, 12, 17, 18),
    },
    **{
        ("f", combo): dict.fromkeys(combo, ALL)
        for combo in (
            ("gta5", "synscapes"),
            ("gta5", "synthia"),
            ("synscapes", "synthia"),
            ("gta5", "synscapes", "synthia"),
        )
    },
}


def class_names(classes: Sequence[int]) -> str:
    return ", ".join(f"{k} {CLASSES[k]}" for k in classes)


def label_sets(
    setting: str, sources: Sequence[str], custom: Mapping[str, Sequence[int]] | None = None
) -> list[tuple[int, ...]]:
    """The class set of each source, in ``sources`` order (the table's row, or ``custom`` when given).

    One-line :class:`UserError` for an unknown setting, source or combination, and for class sets whose
    union misses a class (naming the missing classes).
    """
    if setting not in SETTINGS:
        raise UserError(f"unknown UMMA label setting {setting!r}", fix="use f, p or n (umma.md §1)")
    unknown = [s for s in sources if s not in SOURCES]
    if unknown or len(set(sources)) != len(sources) or not 2 <= len(sources) <= 3:
        raise UserError(
            f"UMMA sources {list(sources)} are not 2 or 3 distinct sources of {', '.join(SOURCES)}",
            fix="list them in options.sources, e.g. [synscapes, gta5]",
        )
    if custom is not None:
        missing_sources = [s for s in sources if s not in custom]
        if missing_sources:
            raise UserError(
                f"options.class_sets has no class set for {missing_sources}",
                fix="give every source its owned trainIds",
            )
        sets = [tuple(sorted(set(int(k) for k in custom[s]))) for s in sources]
        bad = sorted({k for owned in sets for k in owned if not 0 <= k < NUM_CLASSES})
        if bad:
            raise UserError(
                f"options.class_sets holds trainIds outside 0..18: {bad}", fix="use Cityscapes trainIds"
            )
    else:
        row = LABEL_SETS[(setting, tuple(sorted(sources)))]
        sets = [row[s] for s in sources]
    missing = unowned_classes(sets)
    if missing:
        raise UserError(
            f"no source owns {class_names(missing)}: the union of the class sets must be all 19 classes",
            fix="give each missing class to at least one source in options.class_sets",
        )
    return sets


def has_others(setting: str) -> bool:
    """Whether heads carry the "others" channel 0 (settings p and n)."""
    return setting != "f"


def local_lut(owned: Sequence[int], others: bool, *, void_to_others: bool) -> np.ndarray:
    """A 256-entry uint8 LUT from trainIds to the source's local ids (255 → 255, or → 0 with ``void_to_others``)."""
    lut = np.zeros(256, dtype=np.uint8) if others else np.full(256, IGNORE_INDEX, dtype=np.uint8)
    for local, k in enumerate(sorted(owned), start=1 if others else 0):
        lut[k] = local
    lut[IGNORE_INDEX] = 0 if (others and void_to_others) else IGNORE_INDEX
    return lut


def _apply(lut: np.ndarray, label: Tensor | np.ndarray) -> Tensor | np.ndarray:
    if isinstance(label, Tensor):
        return torch.as_tensor(lut, device=label.device).long()[label.long()]
    return lut[np.asarray(label)]


def stage0_target(label: Tensor | np.ndarray, owned: Sequence[int], setting: str) -> Tensor | np.ndarray:
    """Stage-0 training target of a source's ground truth: local ids, and void → "others" in p/n (§2 stage 0)."""
    return _apply(local_lut(owned, has_others(setting), void_to_others=True), label)


def adaptation_target(label: Tensor | np.ndarray, owned: Sequence[int], setting: str) -> Tensor | np.ndarray:
    """y^s = map_s(y) of a 19-class pseudo-label: local ids, 255 kept (§3 notation)."""
    return _apply(local_lut(owned, has_others(setting), void_to_others=False), label)


__all__ = [
    "LABEL_SETS",
    "SETTINGS",
    "SOURCES",
    "Setting",
    "adaptation_target",
    "has_others",
    "label_sets",
    "local_lut",
    "stage0_target",
]
