"""The class-balanced GTA5 file list of DecoupleNet's data loader (decouplenet.md §4 "GTA5 sampling").

Rule (the release's ``gtav_label_info.p``-driven list; ``split.mat`` ids are unused):

* sub-epochs of 3000 draws; at each draw class ``c`` is picked with probability ∝ ``1/ln(1.01 + f_c)``,
  where ``f_c`` is the normalised image-level occurrence count of ``c`` so far in the sub-epoch (uniform
  at its start), then the next file of ``c`` is taken and every class it holds is counted;
* per-class cursors persist across sub-epochs; an exhausted list is reshuffled and restarts at index
  ``len mod (len − 1)`` (1 for lists longer than 2);
* the list has ``(⌊N·8/3000⌋ + 1)·3000`` entries for N iterations of batch 8.

Not wired into the Trainer's sampler yet (it draws the source stream uniformly); kept as the rule and its test.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

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


__all__ = ["balanced_list_length", "class_balanced_files", "class_weights"]
