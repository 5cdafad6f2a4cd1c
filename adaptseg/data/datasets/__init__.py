"""Dataset readers for the official layouts (shared/datasets.md), and :func:`build_dataset` by name."""

from __future__ import annotations

import inspect
from pathlib import Path

from adaptseg.data.datasets.acdc import ACDC
from adaptseg.data.datasets.base import Entry, Sample, SegDataset, nearest_hint
from adaptseg.data.datasets.cityscapes import Cityscapes
from adaptseg.data.datasets.darkzurich import DarkZurich
from adaptseg.data.datasets.gta5 import GTA5
from adaptseg.data.datasets.mapillary import Mapillary
from adaptseg.data.datasets.synscapes import Synscapes
from adaptseg.data.datasets.synthia import Synthia
from adaptseg.errors import UserError

#: Reader classes by dataset name.
DATASETS: dict[str, type[SegDataset]] = {
    cls.name: cls for cls in (Cityscapes, GTA5, Synthia, Synscapes, Mapillary, ACDC, DarkZurich)
}
_ALIASES = {
    "gta": "gta5",
    "dark_zurich": "darkzurich",
    "dark-zurich": "darkzurich",
    "mapillary_vistas": "mapillary",
}


def dataset_class(name: str) -> type[SegDataset]:
    """The reader class for ``name`` (case-insensitive); a UserError names the nearest known dataset."""
    key = _ALIASES.get(name.lower(), name.lower())
    if key not in DATASETS:
        raise UserError(
            f"unknown dataset {name!r}{nearest_hint(key, DATASETS)}",
            fix=f"choose one of: {', '.join(DATASETS)}",
        )
    return DATASETS[key]


def dataset_options(name: str) -> tuple[str, ...]:
    """The keyword options ``build_dataset`` accepts for ``name`` (e.g. ACDC's ``condition``)."""
    params = inspect.signature(dataset_class(name).__init__).parameters.values()
    return tuple(p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY)


def build_dataset(name: str, root: str | Path, split: str | None = None, **options) -> SegDataset:
    """Open dataset ``name`` at ``root`` (its official layout) for ``split`` (None: the dataset's default).

    Options: ``labels=False`` (read images only), ``strict=False`` (keep unpaired images), and per
    dataset ``condition`` (ACDC: fog|night|rain|snow|all) and ``time`` (Dark Zurich train: night|twilight|day).
    """
    cls = dataset_class(name)
    valid = dataset_options(name)
    for option in options:
        if option not in valid:
            raise UserError(
                f"unknown option {option!r} for dataset {cls.name}{nearest_hint(option, valid)}",
                fix=f"valid options: {', '.join(valid)}",
            )
    return cls(root, split, **options)


__all__ = [
    "ACDC",
    "DATASETS",
    "Cityscapes",
    "DarkZurich",
    "Entry",
    "GTA5",
    "Mapillary",
    "Sample",
    "SegDataset",
    "Synscapes",
    "Synthia",
    "build_dataset",
    "dataset_class",
    "dataset_options",
]
