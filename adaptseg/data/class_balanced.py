"""Class-balanced file lists: DecoupleNet's GTA5 sampling (decouplenet.md §4), ``data.<stream>.class_balanced``.

Rule (the release's ``gtav_label_info.p``-driven list; ``split.mat`` ids are unused):

* sub-epochs of 3000 draws; at each draw class ``c`` is picked with probability ∝ ``1/ln(1.01 + f_c)``,
  where ``f_c`` is the normalised image-level occurrence count of ``c`` so far in the sub-epoch (uniform
  at its start), then the next file of ``c`` is taken and every class it holds is counted;
* per-class cursors persist across sub-epochs; an exhausted list is reshuffled and restarts at index
  ``len mod (len − 1)`` (1 for lists longer than 2);
* the list has ``(⌊N·8/3000⌋ + 1)·3000`` entries for N iterations of batch 8.

A stream with ``class_balanced: {}`` reads through a :class:`ClassBalancedReader`: the list is drawn once
per stage (from the recipe seed and the stage name, the same on every rank) from per-image class presence —
the class statistics RCS caches in the run (``class-stats/``), so stale statistics stop the run the same
way — and the stream's shuffled epochs run over the list, as the release's ``DistributedSampler`` does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from adaptseg.errors import UserError

SUB_EPOCH = 3000
BATCH = 8
SMOOTHING = 1.01


def class_weights(frequencies: np.ndarray) -> np.ndarray:
    """Draw probabilities ∝ ``1/ln(1.01 + f)`` over classes with normalised occurrence ``f``."""
    weights = 1.0 / np.log(SMOOTHING + np.asarray(frequencies, dtype=np.float64))
    return weights / weights.sum()


def balanced_list_length(iterations: int, batch: int = BATCH, sub_epoch: int = SUB_EPOCH) -> int:
    """``(⌊N·batch/sub_epoch⌋ + 1)·sub_epoch``."""
    return (iterations * batch // sub_epoch + 1) * sub_epoch


def class_balanced_files(
    label_to_file: Mapping[int, Sequence[str]],
    file_to_label: Mapping[str, Sequence[int]],
    length: int,
    rng: np.random.Generator,
    sub_epoch: int = SUB_EPOCH,
) -> list[str]:
    """``length`` file names drawn by the rule of the module docstring."""
    classes = sorted(c for c, files in label_to_file.items() if files)
    if not classes:
        raise ValueError("no class has a file")
    lists = {c: list(label_to_file[c]) for c in classes}
    cursors = dict.fromkeys(classes, 0)
    index = {c: i for i, c in enumerate(classes)}
    out: list[str] = []
    while len(out) < length:
        counts = np.zeros(len(classes))
        for _ in range(min(sub_epoch, length - len(out))):
            total = counts.sum()
            frequencies = counts / total if total else np.full(len(classes), 1.0 / len(classes))
            c = classes[int(rng.choice(len(classes), p=class_weights(frequencies)))]
            files = lists[c]
            name = files[cursors[c]]
            cursors[c] += 1
            if cursors[c] == len(files):
                rng.shuffle(files)
                cursors[c] = len(files) % (len(files) - 1) if len(files) > 1 else 0
            out.append(name)
            for other in file_to_label.get(name, ()):
                if other in index:
                    counts[index[other]] += 1
    return out


class ClassBalancedReader:
    """A labelled reader seen through its class-balanced list: ``len`` is the list's length and item ``i``
    is the wrapped reader's item ``indices[i]``. Everything else reads through to the wrapped reader."""

    def __init__(
        self, reader: Any, statistics_file: Path, length: int, seed: Sequence[int], sub_epoch: int = SUB_EPOCH
    ):
        if not getattr(reader, "has_labels", True):
            raise UserError(
                f"class-balanced sampling needs labels, and {reader!r} has none",
                fix="remove 'class_balanced' from this stream, or set labels: true on a labelled split",
            )
        self.reader = reader
        self.statistics_file = Path(statistics_file)
        self.length = length
        self.seed = tuple(seed)
        self.sub_epoch = sub_epoch

    @cached_property
    def indices(self) -> list[int]:
        from adaptseg.data.rcs import load_or_compute_statistics

        counts = load_or_compute_statistics(self.reader, self.statistics_file).counts
        present = counts > 0
        by_class = {int(c): np.flatnonzero(present[:, c]).tolist() for c in range(present.shape[1])}
        by_file = {i: np.flatnonzero(row).tolist() for i, row in enumerate(present)}
        rng = np.random.default_rng(list(self.seed))
        return class_balanced_files(by_class, by_file, self.length, rng, self.sub_epoch)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int):
        return self.reader[self.indices[i]]

    def __getattr__(self, name: str) -> Any:
        if "reader" not in self.__dict__:  # while unpickling in a loader worker
            raise AttributeError(name)
        return getattr(self.__dict__["reader"], name)

    def __repr__(self) -> str:
        return f"ClassBalancedReader({self.reader!r}, {self.length} draws)"


__all__ = ["ClassBalancedReader", "balanced_list_length", "class_balanced_files", "class_weights"]
