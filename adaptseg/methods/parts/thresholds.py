"""Class-wise confidence thresholds over a whole pseudo-labelled split, in bounded memory.

Rule (umma.md §3.1 "Class thresholds over the whole train set"; the same shape as the class-wise
percentile thresholds of CBST/DecoupleNet): for each class c, sort the confidences of the pixels whose
pseudo-label is c and take the one at index ``round(q·n_c)`` (Python ``round``: half to even), cap it
at ``cap`` (0.9 in UMMA) and use 0 for a class no pixel predicts. A pixel is kept when its confidence is
``≥ t_ŷ`` and set to 255 otherwise (:func:`apply_class_thresholds`; equality is kept).

The release sorts two float64 arrays of every pixel of the split (2975×512×1024: ~25 GB). Here the
confidences are counted in a per-class histogram of ``bins`` levels (:class:`ClassConfidenceHistogram`,
19×256 counters for the pseudo-label store's uint8 confidences): the order statistic is exact over the
quantised values the store keeps, and the memory does not grow with the split.

Quirk switches: none.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from adaptseg.data.labels import IGNORE_INDEX

#: the pseudo-label store keeps confidences as uint8 round(255·p): 256 levels
STORE_LEVELS = 256


def python_round(x: float) -> int:
    """Python's ``round`` (half to even), spelled out because the rule depends on it."""
    return int(round(x))


class ClassConfidenceHistogram:
    """Per-class counts of confidences on ``bins`` equally spaced levels 0, 1/(bins−1), …, 1.

    ``update`` takes a label map (N×H×W or H×W, 255 ignored) and the matching confidences, either as
    levels (integer arrays: uint8 store values for the default 256 bins) or as floats in [0, 1], which are
    rounded to the nearest level.
    """

    def __init__(self, num_classes: int, bins: int = STORE_LEVELS):
        if bins < 2:
            raise ValueError(f"bins must be ≥ 2, got {bins}")
        self.num_classes = num_classes
        self.bins = bins
        self.counts = np.zeros((num_classes, bins), dtype=np.int64)

    def levels(self, confidence: np.ndarray | Tensor) -> np.ndarray:
        """Confidences as integer levels (integers pass through, floats are rounded to the nearest level)."""
        conf = confidence.cpu().numpy() if isinstance(confidence, Tensor) else np.asarray(confidence)
        if np.issubdtype(conf.dtype, np.integer):
            levels = conf.astype(np.int64)
        else:
            levels = np.rint(conf.astype(np.float64) * (self.bins - 1)).astype(np.int64)
        if levels.size and (levels.min() < 0 or levels.max() >= self.bins):
            raise ValueError(f"confidence levels must lie in [0, {self.bins - 1}]")
        return levels

    def update(self, label: np.ndarray | Tensor, confidence: np.ndarray | Tensor) -> None:
        """Count every non-ignored pixel of ``label`` at its confidence level."""
        label = label.cpu().numpy() if isinstance(label, Tensor) else np.asarray(label)
        levels = self.levels(confidence)
        if label.shape != levels.shape:
            raise ValueError(f"label {label.shape} and confidence {levels.shape} differ in shape")
        keep = label != IGNORE_INDEX
        flat = label[keep].astype(np.int64) * self.bins + levels[keep]
        self.counts += np.bincount(flat, minlength=self.num_classes * self.bins).reshape(
            self.num_classes, self.bins
        )

    def threshold_levels(self, quantile: float = 0.5, cap: float | None = None) -> np.ndarray:
        """Per-class thresholds as levels: the level at sorted index ``round(quantile·n_c)``, 0 for empty classes.

        ``cap`` (a probability) caps them at the lowest level ``≥ cap``, so ``level ≥ t`` keeps exactly the
        confidences ``≥ min(t_c, cap)``.
        """
        out = np.zeros(self.num_classes, dtype=np.int64)
        cumulative = np.cumsum(self.counts, axis=1)
        for c in range(self.num_classes):
            n = int(cumulative[c, -1])
            if n == 0:
                continue
            index = min(python_round(quantile * n), n - 1)
            out[c] = int(np.searchsorted(cumulative[c], index, side="right"))
        if cap is not None:
            out = np.minimum(out, int(np.ceil(cap * (self.bins - 1) - 1e-9)))
        return out

    def thresholds(self, quantile: float = 0.5, cap: float | None = None) -> np.ndarray:
        """Per-class thresholds as probabilities: ``min(t_c, cap)`` (umma.md §3.1), 0 for empty classes."""
        values = self.threshold_levels(quantile) / (self.bins - 1)
        return np.minimum(values, cap) if cap is not None else values

    def state_dict(self) -> dict[str, np.ndarray]:
        return {"counts": self.counts.copy()}


def apply_class_thresholds(label: Tensor, confidence: Tensor, thresholds: Tensor) -> Tensor:
    """``label`` with 255 wherever ``confidence < thresholds[label]`` (strict: equality is kept)."""
    valid = label != IGNORE_INDEX
    t = thresholds.to(confidence.dtype)[torch.where(valid, label, torch.zeros_like(label)).long()]
    return torch.where(valid & (confidence < t), torch.full_like(label, IGNORE_INDEX), label)


__all__ = ["STORE_LEVELS", "ClassConfidenceHistogram", "apply_class_thresholds", "python_round"]
