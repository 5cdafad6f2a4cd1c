"""Dataset readers by name: each reader module registers its class, its aliases and its evaluation preset.

A new dataset is one module in ``adaptseg/data/datasets/`` with ``@register_dataset(...)`` on its
:class:`~adaptseg.data.datasets.base.SegDataset` subclass (whose ``name`` recipes and ``--dataset`` use).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar

from adaptseg.data.datasets.base import SegDataset, nearest_hint
from adaptseg.errors import UserError

D = TypeVar("D", bound=type[SegDataset])

#: reader classes by dataset name
DATASETS: dict[str, type[SegDataset]] = {}
_ALIASES: dict[str, str] = {}
_EVAL_PRESETS: dict[str, str] = {}


def register_dataset(*, aliases: Iterable[str] = (), eval_preset: str | None = None) -> Callable[[D], D]:
    """Class decorator: make a reader available by its ``name`` (and ``aliases``).

    ``eval_preset`` names the inference preset (``infer/<name>.yaml``) of the dataset's evaluation
    protocol (shared/datasets.md §8), used by ``adaptseg eval`` and in-training evaluation when none is
    given; without one, images are evaluated whole at their native size.
    """

    def decorator(cls: D) -> D:
        name = cls.name
        if DATASETS.get(name, cls) is not cls:
            raise ValueError(f"dataset {name!r} registered twice")
        DATASETS[name] = cls
        _ALIASES.update(dict.fromkeys(aliases, name))
        if eval_preset is not None:
            _EVAL_PRESETS[name] = eval_preset
        return cls

    return decorator


def _canonical(name: str) -> str:
    key = name.lower()
    return _ALIASES.get(key, key)


def dataset_class(name: str) -> type[SegDataset]:
    """The reader class for ``name`` (case-insensitive); a UserError names the nearest known dataset."""
    key = _canonical(name)
    if key not in DATASETS:
        raise UserError(
            f"unknown dataset {name!r}{nearest_hint(key, DATASETS)}",
            fix=f"choose one of: {', '.join(DATASETS)}",
        )
    return DATASETS[key]


def eval_preset(name: str) -> str | None:
    """The inference preset name of ``name``'s evaluation protocol, or ``None`` (unknown names included)."""
    return _EVAL_PRESETS.get(_canonical(name))


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
