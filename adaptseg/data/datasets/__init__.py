"""Dataset readers for the official layouts (shared/datasets.md), and :func:`build_dataset` by name.

Every module of this package is imported here, so the readers in it register themselves
(:func:`~adaptseg.data.datasets.registry.register_dataset`).
"""

from __future__ import annotations

from adaptseg.data.datasets.base import Entry, Sample, SegDataset
from adaptseg.data.datasets.registry import (
    DATASETS,
    build_dataset,
    dataset_class,
    dataset_options,
    eval_preset,
    register_dataset,
)
from adaptseg.plugins import import_submodules

import_submodules(__name__)

__all__ = [
    "DATASETS",
    "Entry",
    "Sample",
    "SegDataset",
    "build_dataset",
    "dataset_class",
    "dataset_options",
    "eval_preset",
    "register_dataset",
]
