"""Rare-class sampling (RCS, DAFormer — Hoyer et al., CVPR 2022) for a labelled training stream.

A stream with ``rcs:`` in its recipe spec (``data.source.rcs: {}``) draws every sample in two steps:
a class ``c`` with probability ``P(c) = softmax((1 − f_c)/T)``, then an image uniformly among those
with more than ``min_pixels`` pixels of ``c``. Its training crop is redrawn (up to 10 more times, the last
one kept) until it holds more than ``min_pixels · min_crop_ratio`` pixels of ``c``. Rules, from the
released ``lhoyer/DAFormer`` (``get_rcs_class_probs``, ``UDADataset.get_rare_class_sample`` and the
``tools/convert_datasets`` statistics):

* ``f_c`` = the share of class ``c`` among **all labelled pixels of the dataset** (255 left out), from
  per-image pixel counts of the labels as read (full resolution, before the pipeline);
* only classes present somewhere are drawn; ``T = 0.01``, ``min_pixels = 3000``, ``min_crop_ratio = 0.5``
  (DAFormer's and MIC's configs); the comparisons are strict (``n > min_pixels``);
* a present class with no image over ``min_pixels`` is an error naming the fix (the release asserts).

**Statistics** (:class:`ClassStatistics`): the per-image counts are computed once per dataset and cached
next to the run, ``RUN_DIR/class-stats/<dataset>.json``, written atomically under a file lock (so DDP
ranks compute them once and a resumed run or a later stage reads them). The file records the dataset's
sample ids and label-file sizes; when they no longer match the dataset, training stops with a one-line
error naming the file and the fix (delete it to recompute), instead of sampling from stale counts.

**Randomness**: the class and image of stream position ``p`` come from ``(seed, stream, p, 2)`` and the
``k``-th crop attempt from ``(seed, stream, p, 1, k)`` (the first is the uniform sampler's own crop
generator), so batches stay a pure function of (seed, stream, iteration, rank): resume is bit-exact and
DDP ranks draw disjoint positions (:mod:`adaptseg.data.pipeline`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from adaptseg.data.pipeline import StreamSampler, file_lock
from adaptseg.errors import UserError
from adaptseg.io import write_json_atomic

#: re-crops after the first one (the release's ``for j in range(10)``)
RCS_CROP_RETRIES = 10
STATS_FOLDER = "class-stats"
STATS_VERSION = 1
IGNORE = 255


# ------------------------------------------------------------------------------------- statistics
def class_pixel_counts(label: np.ndarray) -> np.ndarray:
    """Pixels per trainId (0..254) of one uint8 label; 255 (ignore) is left out."""
    return np.bincount(label.ravel(), minlength=256)[:IGNORE].astype(np.int64)


def dataset_fingerprint(reader: Any) -> str:
    """A digest of the sample ids and label-file sizes: it changes when the dataset's labels change."""
    digest = hashlib.sha256()
    for entry in reader.entries:
        size = (
            entry.label_path.stat().st_size
            if entry.label_path is not None and entry.label_path.exists()
            else -1
        )
        digest.update(f"{entry.id}\t{size}\n".encode())
    return digest.hexdigest()


@dataclass(frozen=True)
class ClassStatistics:
    """Per-image pixel counts ``counts[i, c]`` of a labelled dataset, with the dataset's fingerprint."""

    ids: tuple[str, ...]
    counts: np.ndarray  # int64, N × K (K = the highest class present + 1)
    fingerprint: str

    @classmethod
    def compute(cls, reader: Any) -> ClassStatistics:
        """Read every label of ``reader`` once (``reader.read_label(i)``)."""
        if not getattr(reader, "has_labels", True):
            raise UserError(
                f"rare-class sampling needs labels, and {reader!r} has none",
                fix="remove 'rcs' from this stream, or set labels: true on a labelled split",
            )
        rows = []
        for i in range(len(reader)):
            label = reader.read_label(i)
            if label is None:
                raise UserError(
                    f"rare-class sampling needs labels: sample {reader.entries[i].id!r} has none",
                    fix="remove 'rcs' from this stream",
                )
            rows.append(class_pixel_counts(label))
        counts = np.stack(rows)
        present = np.flatnonzero(counts.sum(0))
        width = int(present[-1]) + 1 if present.size else 0
        return cls(tuple(e.id for e in reader.entries), counts[:, :width], dataset_fingerprint(reader))

    def to_json(self) -> dict[str, Any]:
        """Sparse per-image counts (DAFormer's ``sample_class_stats.json`` shape) plus ids and fingerprint."""
        return {
            "version": STATS_VERSION,
            "fingerprint": self.fingerprint,
            "images": [
                {"id": i, "counts": {str(c): int(n) for c, n in enumerate(row) if n}}
                for i, row in zip(self.ids, self.counts, strict=True)
            ],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ClassStatistics:
        images = data["images"]
        width = 1 + max((int(c) for image in images for c in image["counts"]), default=-1)
        counts = np.zeros((len(images), width), np.int64)
        for row, image in enumerate(images):
            for c, n in image["counts"].items():
                counts[row, int(c)] = n
        return cls(tuple(image["id"] for image in images), counts, str(data["fingerprint"]))


def load_or_compute_statistics(reader: Any, path: Path) -> ClassStatistics:
    """The cached statistics at ``path`` when they match ``reader``; computed and written when absent.

    Stale statistics (another dataset, or labels changed since) are a :class:`UserError` naming the file.
    """
    with file_lock(path.with_name(f".{path.name}.lock")):
        if not path.is_file():
            stats = ClassStatistics.compute(reader)
            write_json_atomic(path, stats.to_json())
            return stats
        try:
            data = json.loads(path.read_text())
            stats = ClassStatistics.from_json(data)
            version = data.get("version")
        except (ValueError, KeyError, TypeError) as exc:
            raise UserError(
                f"unreadable class statistics ({exc})",
                path=path,
                fix="delete the file; the next run recomputes it",
            ) from None
    fix = "delete the file; the next run recomputes it from the dataset as it is now"
    if version != STATS_VERSION:
        raise UserError(f"class statistics of format {version}, expected {STATS_VERSION}", path=path, fix=fix)
    if len(stats.ids) != len(reader) or stats.fingerprint != dataset_fingerprint(reader):
        raise UserError(
            f"stale class statistics: computed for {len(stats.ids)} images, the dataset now has "
            f"{len(reader)} with different ids or labels",
            path=path,
            fix=fix,
        )
    return stats


# -------------------------------------------------------------------------------------- sampling
def rare_class_probabilities(
    pixel_totals: Sequence[int] | np.ndarray, temperature: float
) -> tuple[np.ndarray, np.ndarray]:
    """``(classes, P)``: the classes with pixels and ``P(c) = softmax((1 − f_c)/T)``, ``f_c`` their pixel share."""
    totals = np.asarray(pixel_totals, dtype=np.float64)
    classes = np.flatnonzero(totals > 0)
    if classes.size == 0:
        raise UserError(
            "rare-class sampling: the dataset's labels hold no class pixels (all 255)",
            fix="check the labels with `adaptseg data check`",
        )
    freq = totals[classes] / totals[classes].sum()
    logits = (1.0 - freq) / temperature
    weights = np.exp(logits - logits.max())
    return classes, weights / weights.sum()


@dataclass(frozen=True)
class RareClassTable:
    """The classes RCS draws, their probabilities and, per class, the images with enough of its pixels."""

    classes: np.ndarray
    probabilities: np.ndarray
    images: tuple[np.ndarray, ...]  # images[k]: indices of the images with > min_pixels of classes[k]

    @classmethod
    def build(
        cls, stats: ClassStatistics, *, temperature: float, min_pixels: int, source: Path | None = None
    ) -> RareClassTable:
        classes, probabilities = rare_class_probabilities(stats.counts.sum(0), temperature)
        images = tuple(np.flatnonzero(stats.counts[:, c] > min_pixels) for c in classes)
        empty = [int(c) for c, found in zip(classes, images, strict=True) if found.size == 0]
        if empty:
            raise UserError(
                f"rare-class sampling: class {empty[0]} has no image with more than "
                f"{min_pixels} of its pixels ({len(empty)} such classes)",
                path=source,
                fix="lower rcs.min_pixels for this dataset's image size",
            )
        return cls(classes, probabilities, images)


@dataclass(frozen=True, kw_only=True)
class RareClassSampler(StreamSampler):
    """A :class:`~adaptseg.data.pipeline.StreamSampler` that draws each position's image by class rarity."""

    table: RareClassTable
    min_crop_pixels: float
    crop_retries: int = RCS_CROP_RETRIES

    def draw(self, position: int) -> tuple[int, int]:
        """``(class, image index)`` of stream position ``position``."""
        rng = np.random.default_rng([self.seed, self.key, position, 2])
        k = int(rng.choice(len(self.table.classes), p=self.table.probabilities))
        return int(self.table.classes[k]), int(rng.choice(self.table.images[k]))

    def index(self, position: int) -> int:
        return self.draw(position)[1]

    def accepts(self, position: int, label: np.ndarray | None) -> bool:
        """Whether the crop holds more than ``min_pixels · min_crop_ratio`` pixels of the drawn class."""
        if label is None or self.min_crop_pixels <= 0:
            return True
        return int(np.count_nonzero(label == self.draw(position)[0])) > self.min_crop_pixels


class RareClassReader:
    """A labelled reader whose training stream samples by class rarity (``data.<stream>.rcs``).

    Reads exactly as the reader it wraps; :meth:`sampler` loads (or computes and caches) the class
    statistics in ``statistics_file`` the first time a stream asks for it. ``options`` has
    ``temperature``, ``min_pixels`` and ``min_crop_ratio`` (``adaptseg.train.config.RareClassSamplingOptions``).
    """

    def __init__(self, reader: Any, options: Any, statistics_file: Path):
        self.reader = reader
        self.options = options
        self.statistics_file = Path(statistics_file)

    def __len__(self) -> int:
        return len(self.reader)

    def __getitem__(self, i: int):
        return self.reader[i]

    def __getattr__(self, name: str) -> Any:
        if "reader" not in self.__dict__:  # while unpickling in a loader worker
            raise AttributeError(name)
        return getattr(self.__dict__["reader"], name)

    def __repr__(self) -> str:
        return f"RareClassReader({self.reader!r})"

    @cached_property
    def table(self) -> RareClassTable:
        stats = load_or_compute_statistics(self.reader, self.statistics_file)
        return RareClassTable.build(
            stats,
            temperature=self.options.temperature,
            min_pixels=self.options.min_pixels,
            source=self.statistics_file,
        )

    def sampler(self, seed: int, key: int) -> RareClassSampler:
        o = self.options
        return RareClassSampler(
            size=len(self.reader),
            seed=seed,
            key=key,
            table=self.table,
            min_crop_pixels=o.min_pixels * o.min_crop_ratio,
        )


def statistics_file(run_dir: Path, dataset: Any) -> Path:
    """Where the class statistics of a dataset spec are cached in a run: ``class-stats/<name>-<split>-<hash>.json``.

    The hash covers what selects the samples (name, root, split, options, ids, concat), not the pipeline.
    """
    selection = dataset.model_dump(
        mode="json", include={"name", "root", "split", "options", "ids", "concat", "labels"}
    )
    digest = hashlib.sha256(json.dumps(selection, sort_keys=True).encode()).hexdigest()[:12]
    return Path(run_dir) / STATS_FOLDER / f"{dataset.name}-{dataset.split or 'default'}-{digest}.json"


__all__ = [
    "ClassStatistics",
    "RareClassReader",
    "RareClassSampler",
    "RareClassTable",
    "class_pixel_counts",
    "load_or_compute_statistics",
    "rare_class_probabilities",
    "statistics_file",
]
